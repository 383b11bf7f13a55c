// One connection: a coroutine that owns the socket and the session's sequence (its tokens
// and KV cache). Four cooperating coroutines on the session's strand (no mutex needed):
//   reader     reads and validates frames, answers the cheap ones, hands work to the generator
//   generator  runs each FORWARD/GENERATE as a Generation and turns its events into frames
//   writer     sends queued frames, one write per frame
//   watchdog   enforces the handshake, idle and write timeouts
#pragma once

#include "common/sampler.hpp"
#include "common/asio.hpp"

#include <boost/asio/ssl.hpp>
#include "common/messages.hpp"
#include "server/engine/generation.hpp"
#include "server/engine/strand_signal.hpp"
#include "server/net/server_context.hpp"

#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <vector>

namespace llamawire {

// Entry point spawned by the listener for each accepted connection.
asio::awaitable<void> serve_session(tcp::socket socket, ServerContext& ctx);

class Session {
 public:
  Session(tcp::socket socket, ServerContext& ctx);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  asio::awaitable<void> run();

 private:
  using clock = std::chrono::steady_clock;

  struct Request {
    std::uint32_t request_id = 0;
    clock::time_point received{};
    bool generate = false;
    msg::Forward forward;
    msg::Generate gen;
  };

  enum class PayloadRead { ok, failed, over_budget };
  asio::awaitable<PayloadRead> read_payload(std::uint32_t length, std::vector<std::uint8_t>& payload);
  void release_frame_memory(std::vector<std::uint8_t>& payload);
  asio::awaitable<void> reader();
  asio::awaitable<void> writer();
  asio::awaitable<void> generator();
  asio::awaitable<void> watchdog();

  // Handles one decoded request; returns false when the connection must close.
  bool handle(const FrameHeader& h, Message m);
  // GENERATE's sampling extension: only from 1.5 clients, bias tokens in the vocabulary.
  bool validate_sampling(const msg::SamplingExt& x, std::uint32_t rid);
  bool validate_tokens(const std::vector<std::uint32_t>& tokens, std::uint32_t start_pos, std::uint32_t rid);
  // Runs a FORWARD or GENERATE as a Generation and translates its events to frames.
  asio::awaitable<void> run_request(const Request& job);
  Generation::Params params_for(const Request& job, std::shared_ptr<grammar::CompiledGrammar> grammar) const;
  // One event out as frames; true for the last one.
  bool translate(const Request& job, const Generation::Event& e);
  void send_failure(const Generation::Failure& f, std::uint32_t rid);
  asio::awaitable<void> wait_outbox_room();

  void send(const Message& m, std::uint32_t request_id);
  void send_error(errc e, const std::string& message, bool fatal, std::uint32_t request_id);
  void close_read();  // makes the reader see EOF; the writer still drains
  void set_closing();  // the session is being cut: its request stops, nothing more is read
  void on_server_stop();

  // Frame I/O over TCP or TLS (one read and one write may be outstanding at once).
  asio::awaitable<std::tuple<boost::system::error_code, std::size_t>> read_exact(asio::mutable_buffer b);
  asio::awaitable<std::tuple<boost::system::error_code, std::size_t>> write_all(asio::const_buffer b);
  tcp::socket& lowest() { return tls_ ? tls_->next_layer() : socket_; }

  tcp::socket socket_;                                // plain connections
  std::optional<asio::ssl::stream<tcp::socket>> tls_;  // TLS connections (the socket moves in)
  ServerContext& ctx_;
  asio::any_io_executor ex_;
  std::string peer_;
  std::uint64_t registry_id_ = 0;
  // The session's positions: its tokens and KV cache, kept from request to request. Between
  // requests the cache may be evicted for a waiting request (the tokens stay; what was lost
  // is recomputed at the next request).
  Sequence seq_;
  std::uint64_t holder_id_ = 0;  // in ctx_.admission(), once past HELLO
  std::uint32_t tenant_ = 0;     // the key's tenant (ServerContext::tenant_of)
  Generation* gen_ = nullptr;    // the request running (State::generating, once started)
  std::uint64_t frame_bytes_held_ = 0;  // of ctx_.frame_budget(), for the frame being read

  // The connection's state in PROTOCOL.md's table ("Connection states"); CLOSED is the
  // end of run(). A session being cut (closing_) keeps its state until its request stops.
  enum class State { await_hello, ready, generating };
  State state_ = State::await_hello;
  std::uint16_t client_minor_ = 0;  // HELLO's minor: what this client understands
  bool closing_ = false;
  bool reader_done_ = false;
  bool generator_done_ = false;
  bool writer_done_ = false;
  bool cancel_requested_ = false;  // CANCEL for the request accepted (it may not have started)
  std::optional<Request> job_;  // the request in flight (one at a time), in State::generating

  std::deque<std::vector<std::uint8_t>> outbox_;
  std::size_t outbox_bytes_ = 0;
  bool close_after_flush_ = false;
  std::optional<clock::time_point> write_started_;

  clock::time_point opened_at_;
  clock::time_point last_activity_;
  std::uint64_t tokens_generated_ = 0;
  std::uint64_t tokens_prompt_ = 0;

  StrandSignal job_event_;
  StrandSignal outbox_event_;
  StrandSignal drained_event_;
  asio::steady_timer watchdog_timer_;
};

}  // namespace llamawire

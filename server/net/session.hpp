// One connection: a coroutine that owns the socket, the KV cache and the position.
// Four cooperating coroutines on the session's strand (no mutex needed):
//   reader     reads and validates frames, answers the cheap ones, hands work to the generator
//   generator  runs FORWARD/GENERATE through the scheduler and streams results
//   writer     sends queued frames, one write per frame
//   watchdog   enforces the handshake, idle and write timeouts
#pragma once

#include "common/sampler.hpp"
#include "common/asio.hpp"

#include <boost/asio/experimental/channel.hpp>
#include <boost/asio/ssl.hpp>
#include "common/messages.hpp"
#include "server/model/kv_cache.hpp"
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

  // A wake-up signal between the session's coroutines (all on one strand): notify()
  // resumes every coroutine waiting at that moment (a broadcast, like a condition
  // variable's notify_all; a notify with no waiter is not kept, so waiters re-check their
  // condition in a loop). Each waiter parks on a one-slot channel of its own.
  class Event {
   public:
    explicit Event(const asio::any_io_executor& ex) : ex_(ex) {}
    asio::awaitable<void> wait();
    void notify();

   private:
    using Channel = asio::experimental::channel<void(boost::system::error_code)>;
    asio::any_io_executor ex_;
    std::vector<std::shared_ptr<Channel>> waiting_;
  };

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
  bool validate_tokens(const std::vector<std::uint32_t>& tokens, std::uint32_t start_pos, std::uint32_t rid);
  asio::awaitable<void> run_forward(const Request& job);
  asio::awaitable<void> run_generate(const Request& job);
  // Runs tokens from start through the scheduler into logits_, or with a sampler into
  // sampled_ (drawn on the compute threads); false on failure (reported).
  // expect_more: a generation that will submit its next step right after this one.
  // carry: let the scheduler carry the generation on past this step (see Scheduler).
  asio::awaitable<bool> step(std::span<const int> tokens, int start, std::uint32_t rid, bool expect_more,
                             Sampler* sampler = nullptr, const Scheduler::Continuation* carry = nullptr);
  // Takes KV memory for all a request at `start` may grow to (`need` positions), waiting in
  // line if it must (Admission). A refusal is reported here; `stopped` (CANCEL, a closed
  // peer, a forced shutdown) is left to the caller.
  asio::awaitable<Admission::Status> admit(int start, int need, std::uint32_t rid);
  asio::awaitable<void> wait_outbox_room();

  void send(const Message& m, std::uint32_t request_id);
  void send_error(errc e, const std::string& message, bool fatal, std::uint32_t request_id);
  void close_read();  // makes the reader see EOF; the writer still drains
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
  KvCache kv_;
  int pos_ = 0;     // the session's position: positions whose tokens are known (history_)
  int cached_ = 0;  // of those, positions [0, cached_) are in kv_ (fewer after an eviction)
  std::vector<int> history_;  // the token at each position [0, pos_)
  std::uint64_t holder_id_ = 0;  // in ctx_.admission(), once past HELLO
  bool computing_ = false;       // a request admitted and running: the cache is not evictable
  std::vector<float> logits_;
  int sampled_ = 0;
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
  bool cancel_requested_ = false;
  // Tells the scheduler to stop carrying the running generation on (cancel, close, a full
  // outbox); the only session state it reads.
  std::atomic<bool> hold_{false};
  std::optional<Request> job_;  // the request in flight (one at a time), in State::generating

  std::deque<std::vector<std::uint8_t>> outbox_;
  std::size_t outbox_bytes_ = 0;
  bool close_after_flush_ = false;
  std::optional<clock::time_point> write_started_;

  clock::time_point opened_at_;
  clock::time_point last_activity_;
  std::uint64_t tokens_generated_ = 0;
  std::uint64_t tokens_prompt_ = 0;

  Event job_event_;
  Event outbox_event_;
  Event drained_event_;
  asio::steady_timer watchdog_timer_;
};

}  // namespace llamawire

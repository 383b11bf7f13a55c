// A client connection: connect, handshake, and the protocol's requests as coroutines.
// Used by the CLI, the load tester and the end-to-end tests. Holds no weights.
#pragma once

#include "common/asio.hpp"
#include "common/chat_template.hpp"
#include "common/error.hpp"
#include "common/messages.hpp"
#include "common/tokenizer.hpp"

#include <boost/asio/ssl.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <tuple>
#include <variant>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace llamawire {

struct ModelVocab;

class Connection {
 public:
  using TokenSink = std::function<bool(std::uint32_t token)>;  // false: cancel the generation

  explicit Connection(asio::any_io_executor ex);

  // Resolves and connects (TCP_NODELAY on). Errors carry the OS reason.
  asio::awaitable<Result<void>> connect(const std::string& host, std::uint16_t port);
  asio::awaitable<Result<msg::HelloOk>> hello(const std::string& api_key, const std::string& client_name);
  asio::awaitable<Result<std::vector<std::uint8_t>>> tokenizer();
  asio::awaitable<Result<msg::Vocab>> vocab();  // protocol 1.2
  asio::awaitable<Result<msg::Logits>> forward(std::uint32_t start_pos, std::vector<std::uint32_t> tokens);
  // Streams TOKEN frames to on_token (return false to send CANCEL); ends with END.
  asio::awaitable<Result<msg::End>> generate(msg::Generate g, const TokenSink& on_token);
  asio::awaitable<Result<std::uint32_t>> reset(std::uint32_t position);
  asio::awaitable<Result<std::string>> stats();
  asio::awaitable<Result<void>> ping(std::uint64_t nonce);

  // Raw frames, for tests that speak the protocol badly on purpose.
  asio::awaitable<Result<void>> send(const Message& m, std::uint32_t request_id);
  asio::awaitable<Result<void>> send_bytes(std::vector<std::uint8_t> bytes);
  asio::awaitable<Result<std::pair<FrameHeader, Message>>> receive();

  void close();
  // Speak TLS (verifying the server's certificate and name) on the next connect().
  void use_tls(asio::ssl::context& ctx) { tls_ctx_ = &ctx; }
  tcp::socket& socket() { return lowest(); }
  // Gives up on a receive after this long (default 120 s).
  void set_receive_timeout(std::chrono::milliseconds t) { receive_timeout_ = t; }

  std::uint64_t bytes_sent() const { return bytes_sent_; }
  std::uint64_t bytes_received() const { return bytes_received_; }
  std::uint64_t frames_sent() const { return frames_sent_; }
  std::uint64_t frames_received() const { return frames_received_; }

 private:
  // Receives frames for request `rid` until one that is not a TOKEN (TOKENs go to on_token,
  // which may ask to cancel); ERROR frames become errors.
  asio::awaitable<Result<Message>> reply(std::uint32_t rid, const TokenSink* on_token);
  // Sends a request and waits for its reply of type Reply.
  template <class Reply>
  asio::awaitable<Result<Reply>> call(Message request, std::string_view what, const TokenSink* on_token = nullptr);

  tcp::socket& lowest() { return tls_ ? tls_->next_layer() : socket_; }

  tcp::socket socket_;
  asio::ssl::context* tls_ctx_ = nullptr;
  std::optional<asio::ssl::stream<tcp::socket>> tls_;
  std::uint32_t next_rid_ = 1;
  std::chrono::milliseconds receive_timeout_{120'000};
  std::uint64_t bytes_sent_ = 0, bytes_received_ = 0, frames_sent_ = 0, frames_received_ = 0;
};

// An ERROR frame as an Error value ("server: <message>").
Error error_from_frame(const msg::Error& e);

// What a client needs to speak to a model: its tokenizer and chat template. From a local
// tokenizer.bin (`local_path`), else from the server: VOCAB when it speaks 1.2 or later,
// else TOKENIZER (a llama2.c vocabulary, the Llama-2 template).
struct ModelVocab {
  Tokenizer tok;
  ChatFormat chat = kDefaultChatFormat;
  std::string warning;  // a chat template this client does not know (it uses the default)
};
asio::awaitable<Result<ModelVocab>> fetch_vocab(Connection& conn, const msg::HelloOk& hello, const std::string& local_path);

}  // namespace llamawire

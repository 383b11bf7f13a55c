#include "client/connection.hpp"

namespace llamawire {

using namespace asio::experimental::awaitable_operators;

Error error_from_frame(const msg::Error& e) { return make_error(from_wire(e.code), "server: " + e.message); }

namespace {

Error from_ec(const boost::system::error_code& ec, const std::string& what) {
  return Error{ec, what + ": " + ec.message()};
}

}  // namespace

Connection::Connection(asio::any_io_executor ex) : socket_(std::move(ex)) {}

void Connection::close() {
  boost::system::error_code ec;
  lowest().shutdown(tcp::socket::shutdown_both, ec);
  lowest().close(ec);
}

asio::awaitable<Result<void>> Connection::connect(const std::string& host, std::uint16_t port) {
  tcp::resolver resolver(socket_.get_executor());
  auto [rec, endpoints] =
      co_await resolver.async_resolve(host, std::to_string(port), asio::as_tuple(asio::use_awaitable));
  if (rec) co_return from_ec(rec, "cannot resolve " + host);
  auto [ec, ep] = co_await asio::async_connect(socket_, endpoints, asio::as_tuple(asio::use_awaitable));
  if (ec) co_return from_ec(ec, "cannot connect to " + host + ":" + std::to_string(port));
  boost::system::error_code ignore;
  socket_.set_option(tcp::no_delay(true), ignore);
  if (tls_ctx_ != nullptr) {
    tls_.emplace(std::move(socket_), *tls_ctx_);
    boost::system::error_code addr_ec;
    asio::ip::make_address(host, addr_ec);
    if (addr_ec) SSL_set_tlsext_host_name(tls_->native_handle(), host.c_str());  // SNI for names, not IPs
    tls_->set_verify_mode(asio::ssl::verify_peer);
    tls_->set_verify_callback(asio::ssl::host_name_verification(host));
    auto [hec] = co_await tls_->async_handshake(asio::ssl::stream_base::client, asio::as_tuple(asio::use_awaitable));
    if (hec) co_return from_ec(hec, "TLS handshake with " + host + ":" + std::to_string(port) + " failed");
  }
  co_return Result<void>{};
}

asio::awaitable<Result<void>> Connection::send_bytes(std::vector<std::uint8_t> bytes) {
  std::tuple<boost::system::error_code, std::size_t> wrote;
  if (tls_) {
    wrote = co_await asio::async_write(*tls_, asio::buffer(bytes), asio::as_tuple(asio::use_awaitable));
  } else {
    wrote = co_await asio::async_write(socket_, asio::buffer(bytes), asio::as_tuple(asio::use_awaitable));
  }
  auto [ec, n] = wrote;
  if (ec) co_return from_ec(ec, "send failed");
  bytes_sent_ += n;
  ++frames_sent_;
  co_return Result<void>{};
}

asio::awaitable<Result<void>> Connection::send(const Message& m, std::uint32_t request_id) {
  auto bytes = encode_frame(m, request_id);
  co_return co_await send_bytes(std::move(bytes));
}

asio::awaitable<Result<std::pair<FrameHeader, Message>>> Connection::receive() {
  asio::steady_timer timer(lowest().get_executor(), receive_timeout_);
  std::array<std::uint8_t, kFrameHeaderBytes> head{};
  std::variant<std::tuple<boost::system::error_code, std::size_t>, std::tuple<boost::system::error_code>> r;
  if (tls_) {
    r = co_await (asio::async_read(*tls_, asio::buffer(head), asio::as_tuple(asio::use_awaitable)) ||
                  timer.async_wait(asio::as_tuple(asio::use_awaitable)));
  } else {
    r = co_await (asio::async_read(socket_, asio::buffer(head), asio::as_tuple(asio::use_awaitable)) ||
                  timer.async_wait(asio::as_tuple(asio::use_awaitable)));
  }
  if (r.index() == 1) {
    close();
    co_return make_error(errc::timed_out, "no reply from the server within " +
                                              std::to_string(receive_timeout_.count() / 1000) + " s");
  }
  auto [ec, n] = std::get<0>(r);
  if (ec) {
    if (ec == asio::error::eof) co_return make_error(errc::io_error, "the server closed the connection");
    co_return from_ec(ec, "receive failed");
  }
  const auto h = decode_header(head, kClientMaxFrameBytes);
  if (!h) co_return h.error();
  std::vector<std::uint8_t> payload(h->length);
  if (h->length > 0) {
    std::tuple<boost::system::error_code, std::size_t> got;
    if (tls_) {
      got = co_await asio::async_read(*tls_, asio::buffer(payload), asio::as_tuple(asio::use_awaitable));
    } else {
      got = co_await asio::async_read(socket_, asio::buffer(payload), asio::as_tuple(asio::use_awaitable));
    }
    auto [ec2, n2] = got;
    if (ec2) co_return from_ec(ec2, "receive failed");
  }
  bytes_received_ += kFrameHeaderBytes + h->length;
  ++frames_received_;
  auto m = decode_payload(h->type, payload);
  if (!m) co_return m.error();
  co_return std::pair{*h, std::move(*m)};
}

asio::awaitable<Result<Message>> Connection::reply(std::uint32_t rid, const TokenSink* on_token) {
  bool cancelled = false;
  for (;;) {
    auto f = co_await receive();
    if (!f) co_return f.error();
    auto& [h, m] = *f;
    if (const auto* e = std::get_if<msg::Error>(&m)) {
      // Errors for this request, or connection-level ones (request id 0), end the wait.
      if (h.request_id == rid || h.request_id == 0 || e->fatal) co_return error_from_frame(*e);
      continue;
    }
    if (h.request_id != rid) continue;  // a late reply to something we gave up on
    if (const auto* t = std::get_if<msg::Token>(&m); t != nullptr && on_token != nullptr) {
      if (!(*on_token)(t->token) && !cancelled) {
        cancelled = true;  // the END that follows says "cancelled"
        const Message cancel = msg::Cancel{};
        auto sent = co_await send(cancel, rid);
        if (!sent) co_return sent.error();
      }
      continue;
    }
    co_return std::move(m);
  }
}

template <class Reply>
asio::awaitable<Result<Reply>> Connection::call(Message request, std::string_view what, const TokenSink* on_token) {
  const auto rid = next_rid_++;
  auto sent = co_await send(request, rid);
  if (!sent) co_return sent.error();
  auto r = co_await reply(rid, on_token);
  if (!r) co_return r.error();
  if (auto* v = std::get_if<Reply>(&*r)) co_return std::move(*v);
  co_return make_error(errc::bad_message, "unexpected reply to " + std::string(what));
}

// Each request is built as a named local before the co_await (g++ 12 coroutines mishandle
// temporaries with destructors inside a co_await expression).
asio::awaitable<Result<msg::HelloOk>> Connection::hello(const std::string& api_key, const std::string& client_name) {
  Message request = msg::Hello{kProtocolMajor, kProtocolMinor, api_key, client_name};
  co_return co_await call<msg::HelloOk>(std::move(request), "HELLO");
}

asio::awaitable<Result<std::vector<std::uint8_t>>> Connection::tokenizer() {
  Message request = msg::GetTokenizer{};
  auto r = co_await call<msg::Tokenizer>(std::move(request), "GET_TOKENIZER");
  if (!r) co_return r.error();
  co_return std::move(r->bytes);
}

asio::awaitable<Result<msg::Vocab>> Connection::vocab() {
  Message request = msg::GetVocab{};
  co_return co_await call<msg::Vocab>(std::move(request), "GET_VOCAB");
}

asio::awaitable<Result<ModelVocab>> fetch_vocab(Connection& conn, const msg::HelloOk& hello, const std::string& local_path) {
  const int vocab = static_cast<int>(hello.vocab_size);
  Result<Tokenizer> tok = make_error(errc::bad_tokenizer, "no tokenizer");
  ModelVocab out;
  if (!local_path.empty()) {
    tok = Tokenizer::load(local_path, vocab);
  } else if (hello.major == kProtocolMajor && hello.minor >= 2) {
    auto v = co_await conn.vocab();
    if (!v) co_return v.error();
    if (static_cast<int>(v->vocab.pieces.size()) != vocab) {
      co_return make_error(errc::bad_tokenizer, "server vocabulary has " + std::to_string(v->vocab.pieces.size()) +
                                                    " tokens, HELLO_OK said " + std::to_string(vocab));
    }
    if (const auto f = chat_format_by_name(v->chat_template)) {
      out.chat = *f;
    } else {
      out.warning = "the server's chat template '" + v->chat_template + "' is unknown here: using " +
                    std::string(chat_format_name(kDefaultChatFormat));
    }
    tok = Tokenizer::from_vocab(std::move(v->vocab), "server vocabulary");
  } else {
    auto bytes = co_await conn.tokenizer();
    if (!bytes) co_return bytes.error();
    tok = Tokenizer::parse(*bytes, "server tokenizer", vocab);
  }
  if (!tok) co_return tok.error();
  out.tok = std::move(*tok);
  co_return out;
}

asio::awaitable<Result<msg::Logits>> Connection::forward(std::uint32_t start_pos, std::vector<std::uint32_t> tokens) {
  Message request = msg::Forward{start_pos, std::move(tokens)};
  co_return co_await call<msg::Logits>(std::move(request), "FORWARD");
}

asio::awaitable<Result<msg::End>> Connection::generate(msg::Generate g, const TokenSink& on_token) {
  Message request = std::move(g);
  co_return co_await call<msg::End>(std::move(request), "GENERATE", &on_token);
}

asio::awaitable<Result<std::uint32_t>> Connection::reset(std::uint32_t position) {
  Message request = msg::Reset{position};
  auto r = co_await call<msg::Ok>(std::move(request), "RESET");
  if (!r) co_return r.error();
  co_return r->position;
}

asio::awaitable<Result<std::string>> Connection::stats() {
  Message request = msg::Stats{};
  auto r = co_await call<msg::StatsReply>(std::move(request), "STATS");
  if (!r) co_return r.error();
  co_return std::move(r->json);
}

asio::awaitable<Result<void>> Connection::ping(std::uint64_t nonce) {
  Message request = msg::Ping{nonce};
  auto r = co_await call<msg::Pong>(std::move(request), "PING");
  if (!r) co_return r.error();
  if (r->nonce != nonce) co_return make_error(errc::bad_message, "PONG with another nonce");
  co_return Result<void>{};
}

}  // namespace llamawire

#include "server/net/http_api.hpp"

#include "server/net/http_request.hpp"

#include "common/log.hpp"
#include "common/sampler.hpp"
#include "common/tokenizer.hpp"
#include "common/frame.hpp"
#include "common/utf8.hpp"
#include "server/net/listener.hpp"

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/json.hpp>

#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <optional>

// Note: every co_await below takes named locals, never temporaries built in the same
// expression: g++ 12 can destroy such temporaries twice across a suspension.

namespace llamawire {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using clock = std::chrono::steady_clock;
using namespace asio::experimental::awaitable_operators;

std::atomic<std::uint64_t> g_request_counter{0};

// The KEY of "Bearer KEY", the scheme's name in any case (RFC 7235: case-insensitive);
// empty when the header is not that.
std::string_view bearer_key(std::string_view header) {
  constexpr std::string_view scheme = "bearer ";
  if (header.size() <= scheme.size()) return {};
  for (std::size_t i = 0; i < scheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(header[i])) != scheme[i]) return {};
  }
  return header.substr(scheme.size());
}

// A generation's log-probabilities in the API's two formats: chat's
// {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]} and completions'
// {"tokens", "token_logprobs", "top_logprobs": [{text: logprob}], "text_offset"}. Entries
// gather until take(), which a streamed chunk calls for the tokens since the last one.
class LogprobsOut {
 public:
  LogprobsOut(bool chat, const Tokenizer& tok) : chat_(chat), tok_(tok) {}
  // `prev`: the token before (text is decoded after it); `offset`: where its text begins.
  void add(int prev, const TokenLogprobs& lp, std::size_t offset) {
    if (chat_) {
      json::object e = entry(prev, lp.token, lp.logprob);
      json::array top;
      for (const auto& [id, v] : lp.top) top.push_back(entry(prev, id, v));
      e["top_logprobs"] = std::move(top);
      content_.push_back(std::move(e));
    } else {
      tokens_.push_back(json::value(utf8::sanitize(piece(prev, lp.token))));
      token_logprobs_.push_back(lp.logprob);
      json::object top;
      for (const auto& [id, v] : lp.top) top[utf8::sanitize(piece(prev, id))] = v;
      top_.push_back(std::move(top));
      offsets_.push_back(offset);
    }
    ++n_;
  }
  bool empty() const { return n_ == 0; }
  json::value take() {
    json::value out = chat_ ? json::value(json::object{{"content", std::move(content_)}})
                            : json::value(json::object{{"tokens", std::move(tokens_)},
                                                       {"token_logprobs", std::move(token_logprobs_)},
                                                       {"top_logprobs", std::move(top_)},
                                                       {"text_offset", std::move(offsets_)}});
    content_ = {};
    tokens_ = {};
    token_logprobs_ = {};
    top_ = {};
    offsets_ = {};
    n_ = 0;
    return out;
  }

 private:
  std::string piece(int prev, int id) const {
    return std::string(tok_.kind() != VocabKind::llama2c ? tok_.decode(prev, id) : printable_piece(tok_.decode(prev, id)));
  }
  json::object entry(int prev, int id, float logprob) const {
    const std::string p = piece(prev, id);
    json::array bytes;
    for (const char c : p) bytes.push_back(static_cast<unsigned char>(c));
    return json::object{{"token", utf8::sanitize(p)}, {"logprob", logprob}, {"bytes", std::move(bytes)}};
  }

  bool chat_;
  const Tokenizer& tok_;
  json::array content_, tokens_, token_logprobs_, top_, offsets_;
  int n_ = 0;
};

class HttpConnection {
 public:
  HttpConnection(tcp::socket socket, ServerContext& ctx, HttpOptions opts)
      : stream_(std::move(socket)), ctx_(ctx), opts_(opts) {
    ctx_.counters().connections_open++;
    if (ctx_.tls() != nullptr) tls_.emplace(std::move(stream_), *ctx_.tls());
    // Registered like a session so that a drain closes idle keep-alive connections and
    // lets running generations finish, and so that an idle one can be closed for a new
    // connection at the connection limit.
    registry_id_ = ctx_.register_session(
        lowest().get_executor(), [this] { close_if_idle(); }, [this] { close_if_idle(); });
  }
  ~HttpConnection() {
    release_body();
    ctx_.unregister_session(registry_id_);
    ctx_.counters().connections_open--;
  }
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;

  asio::awaitable<void> run();

 private:
  using Response = http::response<http::string_body>;
  using Request = http::request<http::string_body>;
  using IoResult = std::tuple<boost::system::error_code, std::size_t>;

  // The stream of this connection, plain or TLS: f(stream) for whichever it is.
  template <class F>
  auto on_stream(F&& f) {
    return tls_ ? f(*tls_) : f(stream_);
  }
  beast::tcp_stream& lowest() { return tls_ ? beast::get_lowest_layer(*tls_) : stream_; }

  void release_body() {
    ctx_.frame_budget().give_back(body_charged_);
    body_charged_ = 0;
  }
  // The Access-Control-Allow-Origin for a request from `origin`: "*" when any may call,
  // the origin itself when it is listed, else empty (no CORS headers).
  std::string cors_allowed(std::string_view origin) const {
    for (const auto& o : opts_.cors_origins) {
      if (o == "*") return "*";
      if (!origin.empty() && o == origin) return std::string(origin);
    }
    return {};
  }
  void close_if_idle() {
    if (busy_) return;
    boost::system::error_code ec;
    lowest().socket().close(ec);
  }

  Response make(http::status st, std::string body, const char* type) {
    Response res{st, version_};
    res.set(http::field::server, "llamawire");
    if (!cors_allow_.empty()) {
      res.set(http::field::access_control_allow_origin, cors_allow_);
      res.set(http::field::vary, "Origin");
    }
    res.set(http::field::content_type, type);
    res.keep_alive(keep_alive_);
    res.body() = std::move(body);
    res.prepare_payload();
    return res;
  }
  Response error(const HttpError& e) {
    ctx_.counters().http_errors_total++;
    auto res = make(e.status, error_body(e), "application/json");
    if (e.status == http::status::unauthorized) res.set(http::field::www_authenticate, "Bearer");
    if (e.status == http::status::service_unavailable) res.set(http::field::retry_after, "1");
    return res;
  }

  // Writes a response; the answer to HEAD has the headers of GET and no body (a body there
  // would be read as the start of the next response on a kept-alive connection).
  asio::awaitable<bool> write(Response res) {
    lowest().expires_after(ctx_.options().write_timeout);
    if (head_) {
      const auto length = res.body().size();
      res.body().clear();
      res.content_length(length);
    }
    auto [ec, n] = co_await on_stream([&](auto& s) { return http::async_write(s, res, asio::as_tuple(asio::use_awaitable)); });
    co_return !ec;
  }
  asio::awaitable<bool> write_raw(std::string data) {
    lowest().expires_after(ctx_.options().write_timeout);
    auto [ec, n] = co_await on_stream(
        [&](auto& s) { return asio::async_write(s, asio::buffer(data), asio::as_tuple(asio::use_awaitable)); });
    co_return !ec;
  }

  // A request, read in three stages: its first byte (within the handshake timeout on a new
  // connection, the idle timeout on a kept-alive one; only then does the connection count as
  // busy), then its headers and its body (together within --request-timeout). The key is
  // checked on the headers, before any body is read; the body's memory comes from the
  // frame budget shared with the binary protocol.
  enum class Read { ok, closed, answered };  // answered: an error reply was sent; close
  asio::awaitable<Read> read_request(beast::flat_buffer& buffer, std::optional<Request>& out, bool first);
  // An error reply, after which the connection closes (the request's body is unread).
  asio::awaitable<Read> reply_and_close(const HttpError& e);
  asio::awaitable<void> handle(Request& req, bool& close);
  // Runs one generation; streams SSE chunks when asked. Returns false when the connection
  // must close.
  asio::awaitable<bool> generate(const GenRequest& r);
  asio::awaitable<bool> generate_admitted(const GenRequest& r, int max_new);
  HttpError refusal(const Generation::Failure& f, int positions) const;
  // The client closed or reset: stop waiting and generating.
  void on_peer_gone();
  // Sets peer_gone_ when the client closes or resets while a generation runs (a
  // non-streamed one writes nothing until the end, so only reading can tell); runs until
  // cancelled.
  asio::awaitable<void> watch_peer();
  // After an error reply with the request's body unread: stop sending, read and drop what
  // the client still sends (bounded), then close, so that the client reads the reply
  // instead of a reset.
  asio::awaitable<void> linger_close(beast::flat_buffer& buffer);

  beast::tcp_stream stream_;                                    // plain connections
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls_;    // TLS connections (the stream moves in)
  ServerContext& ctx_;
  HttpOptions opts_;
  std::uint64_t registry_id_ = 0;
  bool busy_ = false;  // a request has begun (not waiting for the next one)
  bool peer_gone_ = false;
  std::uint32_t tenant_ = 0;  // the request's key's tenant (ServerContext::tenant_of)
  Generation* gen_ = nullptr;  // the generation running, if any
  std::uint64_t body_charged_ = 0;  // of ctx_.frame_budget(), for the request's body
  // The request being answered.
  std::string cors_allow_;  // its Access-Control-Allow-Origin, when its origin may call
  unsigned version_ = 11;
  bool keep_alive_ = false;
  bool head_ = false;
};

asio::awaitable<void> HttpConnection::run() {
  beast::flat_buffer buffer;
  boost::system::error_code ignore;
  lowest().socket().set_option(tcp::no_delay(true), ignore);
  if (tls_) {
    lowest().expires_after(ctx_.options().handshake_timeout);
    auto [hec] = co_await tls_->async_handshake(asio::ssl::stream_base::server, asio::as_tuple(asio::use_awaitable));
    if (hec) {
      log::warn("http: TLS handshake failed: ", hec.message());
      co_return;
    }
  }
  for (bool first = true;; first = false) {
    std::optional<Request> req;
    const Read got = co_await read_request(buffer, req, first);
    if (got != Read::ok) release_body();
    if (got == Read::answered) co_await linger_close(buffer);
    if (got != Read::ok) break;
    struct Idle {
      HttpConnection& c;
      ~Idle() {
        c.busy_ = false;
        c.release_body();
      }
    } idle{*this};
    bool close = false;
    co_await handle(*req, close);
    if (close || !keep_alive_ || ctx_.draining()) break;
  }
  lowest().socket().shutdown(tcp::socket::shutdown_both, ignore);
}

asio::awaitable<HttpConnection::Read> HttpConnection::read_request(beast::flat_buffer& buffer,
                                                                   std::optional<Request>& out, bool first) {
  if (buffer.size() == 0) {
    ctx_.set_idle(registry_id_, true);
    lowest().expires_after(first ? ctx_.options().handshake_timeout : ctx_.options().idle_timeout);
    auto [ec, n] = co_await on_stream(
        [&](auto& s) { return s.async_read_some(buffer.prepare(4096), asio::as_tuple(asio::use_awaitable)); });
    if (ec) co_return Read::closed;  // EOF, timeout, or closed for the connection limit or a drain
    buffer.commit(n);
  }
  ctx_.set_idle(registry_id_, false);
  busy_ = true;
  lowest().expires_after(ctx_.options().request_timeout);
  http::request_parser<http::string_body> parser;
  parser.body_limit(opts_.max_body_bytes);
  parser.header_limit(16 * 1024);
  auto [hec, hn] = co_await on_stream(
      [&](auto& s) { return http::async_read_header(s, buffer, parser, asio::as_tuple(asio::use_awaitable)); });
  version_ = parser.is_header_done() ? parser.get().version() : 11;
  head_ = parser.is_header_done() && parser.get().method() == http::verb::head;
  const auto too_large = [this] {
    return HttpError{http::status::payload_too_large,
                     "request body larger than " + std::to_string(opts_.max_body_bytes) + " bytes"};
  };
  auto not_complete = [this](const char* what) {
    log::warn("http: request ", what, " not complete within ",
              std::chrono::duration_cast<std::chrono::milliseconds>(ctx_.options().request_timeout).count(),
              " ms: closing");
  };
  if (hec == beast::error::timeout) {
    not_complete("headers");
    co_return Read::closed;  // the stream is closed by its timer: nothing can be sent
  }
  if (hec == http::error::end_of_stream || hec == asio::error::eof || hec == asio::error::connection_reset) {
    co_return Read::closed;
  }
  std::optional<HttpError> fail;
  if (hec == http::error::body_limit) {
    fail = too_large();
  } else if (hec) {
    fail = HttpError{http::status::bad_request, "malformed HTTP request: " + hec.message()};
  } else {
    const auto& h = parser.get();
    const std::string target(h.target());
    const std::string path = target.substr(0, target.find('?'));
    cors_allow_ = cors_allowed(h[http::field::origin]);
    // The body's memory, as announced (a chunked body may grow to the limit), from the
    // budget all connections share; given back once the request is answered.
    const std::uint64_t body_bytes =
        parser.content_length() ? std::min<std::uint64_t>(*parser.content_length(), opts_.max_body_bytes)
                                : (parser.chunked() ? opts_.max_body_bytes : 0);
    const auto tenant = ctx_.tenant_of(bearer_key(h[http::field::authorization]));
    tenant_ = tenant.value_or(0);
    if (path != "/health" && h.method() != http::verb::options && !tenant) {
      log::warn("http ", log::quoted(h.method_string()), " ", log::quoted(path),
                ": rejected, missing or invalid API key");
      fail = HttpError{http::status::unauthorized, "missing or invalid API key (Authorization: Bearer ...)",
                       "invalid_request_error", "invalid_api_key"};
    } else if (body_bytes > kMaxHelloFrameBytes && !ctx_.frame_budget().try_take(body_bytes)) {
      fail = HttpError{http::status::service_unavailable,
                       "server busy: request bodies still arriving hold the --frame-memory-mb limit", "server_error",
                       "server_busy"};
    } else if (body_bytes > kMaxHelloFrameBytes) {
      body_charged_ = body_bytes;  // until the request is answered
    }
  }
  if (fail) co_return co_await reply_and_close(*fail);
  // A client that waits for leave to send its body (Expect: 100-continue) gets it now.
  if (version_ == 11 && beast::iequals(parser.get()[http::field::expect], "100-continue") && !parser.is_done()) {
    if (!co_await write_raw("HTTP/1.1 100 Continue\r\n\r\n")) co_return Read::closed;
  }
  auto [bec, bn] = co_await on_stream(
      [&](auto& s) { return http::async_read(s, buffer, parser, asio::as_tuple(asio::use_awaitable)); });
  if (bec == beast::error::timeout) {
    not_complete("body");
    co_return Read::closed;
  }
  if (bec == http::error::body_limit) {
    fail = too_large();
  } else if (bec) {
    fail = HttpError{http::status::bad_request, "malformed HTTP request: " + bec.message()};
  }
  if (fail) co_return co_await reply_and_close(*fail);
  out = parser.release();
  keep_alive_ = out->keep_alive();
  co_return Read::ok;
}

asio::awaitable<HttpConnection::Read> HttpConnection::reply_and_close(const HttpError& e) {
  keep_alive_ = false;
  Response res = error(e);
  co_await write(std::move(res));
  co_return Read::answered;
}

asio::awaitable<void> HttpConnection::linger_close(beast::flat_buffer& buffer) {
  boost::system::error_code ec;
  lowest().socket().shutdown(tcp::socket::shutdown_send, ec);
  // Bounded by time (2 s) and bytes (256 MiB): enough for a client to finish sending a body
  // it had begun, so that it reads the reply instead of a reset.
  lowest().expires_after(std::chrono::seconds(2));
  std::size_t dropped = 0;
  while (dropped < (256u << 20)) {
    buffer.clear();
    auto [rec, n] = co_await lowest().async_read_some(buffer.prepare(16384), asio::as_tuple(asio::use_awaitable));
    if (rec) break;
    dropped += n;
  }
}

asio::awaitable<void> HttpConnection::handle(Request& req, bool& close) {
  lowest().expires_after(ctx_.options().write_timeout);
  const std::string target(req.target());
  std::string path = target.substr(0, target.find('?'));
  // llama.cpp's paths without /v1 are the same endpoints.
  for (const char* p : {"/completions", "/chat/completions", "/models"}) {
    if (path == p) path = "/v1" + path;
  }
  const auto method = req.method();
  if (method == http::verb::options) {
    // A browser's preflight: the methods and headers a page from an allowed origin may use.
    Response res = make(http::status::no_content, "", "text/plain");
    res.set(http::field::allow, "GET, HEAD, POST, OPTIONS");
    if (!cors_allow_.empty()) {
      res.set(http::field::access_control_allow_methods, "GET, HEAD, POST, OPTIONS");
      const auto asked = req[http::field::access_control_request_headers];
      res.set(http::field::access_control_allow_headers,
              asked.empty() ? std::string("Authorization, Content-Type, X-Session-Id") : std::string(asked));
      res.set(http::field::access_control_max_age, "600");
    }
    close = !co_await write(std::move(res));
    co_return;
  }
  if (path == "/health" && (method == http::verb::get || method == http::verb::head)) {
    const bool ok = !ctx_.draining();
    Response res = make(ok ? http::status::ok : http::status::service_unavailable,
                        ok ? R"({"status":"ok"})" : R"({"status":"draining"})", "application/json");
    close = !co_await write(std::move(res));
    co_return;
  }
  if (path == "/metrics" && method == http::verb::get) {
    Response res = make(http::status::ok, ctx_.metrics_text(), "text/plain; version=0.0.4");
    close = !co_await write(std::move(res));
  } else if (path == "/v1/models" && method == http::verb::get) {
    json::object model{{"id", ctx_.options().model_name}, {"object", "model"}, {"created", 0}, {"owned_by", "llamawire"}};
    json::object body{{"object", "list"}, {"data", json::array{model}}};
    Response res = make(http::status::ok, json::serialize(body), "application/json");
    close = !co_await write(std::move(res));
  } else if (path == "/props" && method == http::verb::get) {
    const auto& c = ctx_.weights().config();
    json::object body{{"model", ctx_.options().model_name},        {"n_ctx", ctx_.context()},
                      {"n_vocab", c.vocab_size},                    {"chat_template", ctx_.chat_template().name()},
                      {"total_slots", ctx_.options().max_sessions}, {"bos_token", ctx_.special_tokens().bos},
                      {"eos_token", ctx_.special_tokens().eos},     {"prefix_cache", ctx_.prefix_cache() != nullptr}};
    Response res = make(http::status::ok, json::serialize(body), "application/json");
    close = !co_await write(std::move(res));
  } else if ((path == "/tokenize" || path == "/detokenize") && method == http::verb::post) {
    const bool encode = path == "/tokenize";
    auto answer = co_await ctx_.off_network([&] {
      return encode ? tokenize_request(req.body(), ctx_.tokenizer()) : detokenize_request(req.body(), ctx_.tokenizer());
    });
    Response res = std::holds_alternative<HttpError>(answer)
                       ? error(std::get<HttpError>(answer))
                       : make(http::status::ok, std::move(std::get<std::string>(answer)), "application/json");
    close = !co_await write(std::move(res));
  } else if ((path == "/v1/completions" || path == "/v1/chat/completions") && method == http::verb::post) {
    ctx_.counters().http_requests_total++;
    if (ctx_.draining()) {
      Response res = error({http::status::service_unavailable, "server shutting down", "server_error", "shutting_down"});
      close = !co_await write(std::move(res));
      co_return;
    }
    // Parsing and tokenizing grow with the body (up to --http-max-body): off this thread.
    const bool chat = path == "/v1/chat/completions";
    auto parsed = co_await ctx_.off_network(
        [&] {
          return parse_generation_request(chat, req.body(), ctx_.tokenizer(), ctx_.chat_template(), ctx_.context());
        });
    if (auto* e = std::get_if<HttpError>(&parsed)) {
      Response res = error(*e);
      close = !co_await write(std::move(res));
    } else {
      close = !co_await generate(std::get<GenRequest>(parsed));
    }
  } else {
    const bool known = path == "/metrics" || path == "/v1/models" || path == "/v1/completions" ||
                       path == "/v1/chat/completions" || path == "/props" || path == "/tokenize" || path == "/detokenize";
    Response res = error({known ? http::status::method_not_allowed : http::status::not_found,
                          known ? "method not allowed" : "no such endpoint: " + path});
    close = !co_await write(std::move(res));
  }
}

asio::awaitable<void> HttpConnection::watch_peer() {
  asio::steady_timer forever(co_await asio::this_coro::executor, clock::time_point::max());
  for (;;) {
    auto [ec] = co_await lowest().socket().async_wait(tcp::socket::wait_read, asio::as_tuple(asio::use_awaitable));
    if (ec) co_return;  // cancelled: the generation is over
    char b = 0;
    const auto n = ::recv(lowest().socket().native_handle(), &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
      on_peer_gone();  // EOF or a reset
      break;
    }
    if (n > 0) break;  // a pipelined request (or a TLS record): nothing more can be told
  }
  co_await forever.async_wait(asio::as_tuple(asio::use_awaitable));
}

asio::awaitable<bool> HttpConnection::generate(const GenRequest& r) {
  const int context = ctx_.context();
  const int n_prompt = static_cast<int>(r.prompt.size());
  // The last generated token is never run, so a prompt of n leaves context - n + 1 to
  // generate (as GENERATE and the CLI do).
  const int room = context - n_prompt + 1;
  const int max_new = r.max_tokens_given || !r.chat ? std::min(r.max_tokens, room) : room;
  peer_gone_ = false;
  // One admission rule for both protocols: a session slot while it runs, then (in the
  // Generation) KV memory for all it may grow to. Both waits end early when the client goes
  // away (watch_peer never finishes first: it only flags it and interrupts the waits).
  Admission::Status slot = Admission::Status::stopped;
  {
    auto take = [&]() -> asio::awaitable<Admission::Status> {
      co_return co_await ctx_.admission().take_slot([this] { return peer_gone_ || ctx_.draining(); });
    };
    auto w = co_await (take() || watch_peer());
    if (w.index() == 0) slot = std::get<0>(w);
  }
  if (slot != Admission::Status::admitted) {
    if (peer_gone_) co_return false;
    Response res = error(ctx_.draining() ? HttpError{http::status::service_unavailable, "server shutting down",
                                                     "server_error", "shutting_down"}
                                         : HttpError{http::status::service_unavailable,
                                                     "server busy: all " + std::to_string(ctx_.options().max_sessions) +
                                                         " sessions in use (binary sessions and HTTP generations)",
                                                     "server_error", "server_busy"});
    co_return co_await write(std::move(res));
  }
  struct Slot {
    Admission& a;
    ~Slot() { a.give_slot(); }
  } slot_guard{ctx_.admission()};
  auto done = co_await (generate_admitted(r, max_new) || watch_peer());
  co_return done.index() == 0 && std::get<0>(done);
}

void HttpConnection::on_peer_gone() {
  peer_gone_ = true;
  ctx_.admission().interrupt();
  if (gen_ != nullptr) gen_->cancel(Generation::Reason::closed);
}

asio::awaitable<bool> HttpConnection::generate_admitted(const GenRequest& r, int max_new) {
  const auto t0 = clock::now();
  const Tokenizer& tok = ctx_.tokenizer();
  const int n_prompt = static_cast<int>(r.prompt.size());
  const std::uint64_t seed =
      r.sampling.seed != 0 ? r.sampling.seed : resolve_seed(0) + g_request_counter.fetch_add(1);
  // The grammar, compiled (or found) on the preparation thread, which also takes its first
  // mask there: a new grammar's first masks walk the vocabulary, and the ones after the
  // start are taken as tokens are drawn (once per state for all requests with this grammar).
  std::shared_ptr<grammar::CompiledGrammar> grammar;
  if (!r.grammar.empty()) {
    grammar = co_await ctx_.off_network([&] {
      auto g = ctx_.grammar_for(r.grammar);
      if (g) g->mask(g->start());
      return g;
    });
  }
  const std::string id = std::string(r.chat ? "chatcmpl-" : "cmpl-") + std::to_string(g_request_counter.fetch_add(1));
  const auto created =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  ctx_.counters().http_active++;
  struct Guard {
    ServerCounters& c;
    ~Guard() { c.http_active--; }
  } guard{ctx_.counters()};

  std::optional<LogprobsOut> logprobs;
  if (r.logprobs >= 0) logprobs.emplace(r.chat, tok);
  // The log-probabilities gathered since the last call, or null.
  auto logprobs_value = [&] { return logprobs && !logprobs->empty() ? logprobs->take() : json::value(nullptr); };
  auto chunk_object = [&](const std::string& piece, const char* finish) {
    json::object choice{{"index", 0}};
    if (r.chat) {
      json::object delta;
      if (!piece.empty()) delta["content"] = piece;
      choice["delta"] = delta;
    } else {
      choice["text"] = piece;
    }
    choice["logprobs"] = logprobs_value();
    choice["finish_reason"] = finish ? json::value(finish) : json::value(nullptr);
    return json::object{{"id", id},
                        {"object", r.chat ? "chat.completion.chunk" : "text_completion"},
                        {"created", created},
                        {"model", ctx_.options().model_name},
                        {"choices", json::array{choice}}};
  };
  auto chunk = [&](const std::string& piece, const char* finish) {
    return "data: " + json::serialize(chunk_object(piece, finish)) + "\n\n";
  };
  // The stream's head goes out once the request is admitted (its first event is not a
  // refusal).
  bool head_sent = false;
  auto send_head = [&]() -> asio::awaitable<bool> {
    head_sent = true;
    std::string head = "HTTP/1.1 200 OK\r\nServer: llamawire\r\nContent-Type: text/event-stream\r\n"
                       "Cache-Control: no-cache\r\nConnection: close\r\n";
    if (!cors_allow_.empty()) head += "Access-Control-Allow-Origin: " + cors_allow_ + "\r\nVary: Origin\r\n";
    head += "\r\n";
    if (r.chat) {
      // The first chunk announces the role, as OpenAI's stream does.
      json::object delta{{"role", "assistant"}, {"content", ""}};
      json::object choice{{"index", 0}, {"delta", delta}, {"logprobs", nullptr}, {"finish_reason", nullptr}};
      json::object o{{"id", id}, {"object", "chat.completion.chunk"}, {"created", created},
                     {"model", ctx_.options().model_name}, {"choices", json::array{choice}}};
      head += "data: " + json::serialize(o) + "\n\n";
    } else if (r.echo) {
      head += "data: " + json::serialize(chunk_object(utf8::sanitize(r.prompt_text), nullptr)) + "\n\n";
    }
    co_return co_await write_raw(std::move(head));
  };

  std::string text;      // everything generated so far (after stop handling), raw bytes
  std::size_t sent = 0;  // bytes of `text` already streamed
  std::size_t holdback = 0;
  for (const auto& s : r.stop) holdback = std::max(holdback, s.size() - 1);
  const char* finish = "length";
  int generated = 0;
  int cached_tokens = 0;  // prompt positions the prefix cache supplied
  bool stopped = false;  // by a stop string, or the client gone: later tokens are dropped
  std::optional<HttpError> failure;
  int prev = r.prompt.empty() ? ctx_.special_tokens().bos : r.prompt.back();

  std::string unwritten;  // streamed chunks not yet written
  // One drawn token into the text, and (streamed) out as far as it is safe to.
  auto take_token = [&](const Generation::Token& t) -> asio::awaitable<void> {
    ++generated;
    ctx_.observe_latency(t);
    if (logprobs && t.logprobs && !stopped) logprobs->add(prev, *t.logprobs, (r.echo ? r.prompt_text.size() : 0) + text.size());
    // llama2.c's models print as llama2.c does (lone unprintable bytes dropped); a GGUF
    // vocabulary's byte tokens build characters (the text is sanitized as it goes out).
    text += tok.kind() != VocabKind::llama2c ? tok.decode(prev, t.id) : printable_piece(tok.decode(prev, t.id));
    prev = t.id;
    for (const auto& s : r.stop) {
      const auto at = text.find(s, sent > s.size() ? sent - s.size() : 0);
      if (at != std::string::npos) {
        text.resize(at);
        stopped = true;
      }
    }
    if (stopped) {
      finish = "stop";
      gen_->cancel(Generation::Reason::cancelled);
    }
    if (!r.stream) co_return;
    if (!head_sent && !co_await send_head()) {
      on_peer_gone();
      co_return;
    }
    // Held back: what may still become a stop string, and a character not yet complete
    // (a chunk never ends inside a UTF-8 sequence).
    const std::size_t safe =
        utf8::boundary_at_or_before(text, stopped ? text.size() : (text.size() > holdback ? text.size() - holdback : 0));
    if (safe > sent) {
      unwritten += chunk(utf8::sanitize(std::string_view(text).substr(sent, safe - sent)), nullptr);
      sent = safe;
    }
    // Chunks go out together while more tokens are already waiting (one write, not one
    // per token, when the client is behind).
    if (!unwritten.empty() && !gen_->has_unread()) {
      std::string out = std::move(unwritten);
      unwritten.clear();
      if (!co_await write_raw(std::move(out))) on_peer_gone();  // the client went away: stop generating
    }
  };

  bool cut = false;  // stopped by a forced shutdown
  if (max_new > 0) {
    Sequence seq(ctx_.weights().config(), ctx_.context(), &ctx_.kv_budget());
    Generation::Params p;
    p.prompt = r.prompt;
    p.sampling = r.sampling;
    p.sampling->seed = seed;
    if (!r.grammar.empty()) p.grammar = grammar;
    p.logprobs = r.logprobs;
    p.limit_pos = n_prompt + max_new - 1;
    // Chat stops at the end of the turn; a completion too with a GGUF vocabulary (as
    // llama.cpp's server does), while a llama2.c model runs on past EOS as llama2.c does.
    p.stop_on_eos = r.chat || tok.kind() != VocabKind::llama2c;
    p.received = t0;
    p.tenant = tenant_;
    Generation gen(ctx_.generation_env(), seq, std::move(p));
    gen_ = &gen;
    gen.start(co_await asio::this_coro::executor);
    if (peer_gone_) gen.cancel(Generation::Reason::closed);
    for (;;) {
      const Generation::Event e = co_await gen.next();
      if (const auto* t = std::get_if<Generation::Token>(&e)) {
        if (!stopped && !peer_gone_) co_await take_token(*t);
        continue;
      }
      if (const auto* f = std::get_if<Generation::Failure>(&e)) {
        failure = refusal(*f, n_prompt + max_new - 1);
      } else if (const auto* end = std::get_if<Generation::End>(&e)) {
        ctx_.count_prompt(*end);
        cached_tokens = end->prompt_cached;
        if (end->reason == Generation::Reason::bos || end->reason == Generation::Reason::eos ||
            end->reason == Generation::Reason::grammar) {
          finish = "stop";
        }
        cut = end->reason == Generation::Reason::shutdown;
      }
      break;
    }
    gen_ = nullptr;
  }
  ctx_.counters().http_prompt_tokens_total += static_cast<std::uint64_t>(n_prompt);
  ctx_.counters().http_generated_tokens_total += static_cast<std::uint64_t>(generated);
  log::info("http ", r.chat ? "chat" : "completion", " prompt_tokens=", n_prompt, " generated_tokens=", generated,
            " finish=", peer_gone_ ? "client_gone" : failure ? "refused" : cut ? "shutdown" : finish,
            " seconds=", std::chrono::duration<double>(clock::now() - t0).count());
  if (peer_gone_) co_return false;  // nobody to answer
  if (cut && !failure) {
    failure = HttpError{http::status::service_unavailable,
                        "server shutting down: the generation was stopped after " + std::to_string(generated) + " tokens",
                        "server_error", "shutting_down"};
  }
  if (failure) {
    if (head_sent) {
      ctx_.counters().http_errors_total++;
      std::string last = std::move(unwritten) + "data: " + error_body(*failure) + "\n\n";
      co_await write_raw(std::move(last));
      co_return false;
    }
    if (failure->code == "shutting_down") keep_alive_ = false;
    Response res = error(*failure);
    co_return co_await write(std::move(res)) && keep_alive_;
  }
  json::object usage{{"prompt_tokens", n_prompt},
                     {"completion_tokens", generated},
                     {"total_tokens", n_prompt + generated},
                     {"prompt_tokens_details", json::object{{"cached_tokens", cached_tokens}}}};
  if (r.stream) {
    if (!head_sent && !co_await send_head()) co_return false;
    std::string tail = std::move(unwritten);
    if (text.size() > sent) tail += chunk(utf8::sanitize(std::string_view(text).substr(sent)), nullptr);
    auto last = chunk_object("", finish);
    last["usage"] = usage;  // the final chunk carries the usage counts too
    tail += "data: " + json::serialize(last) + "\n\n";
    if (r.include_usage) {
      // stream_options.include_usage: one more chunk, with no choices, as OpenAI sends it.
      auto u = chunk_object("", nullptr);
      u["choices"] = json::array{};
      u["usage"] = usage;
      tail += "data: " + json::serialize(u) + "\n\n";
    }
    tail += "data: [DONE]\n\n";
    co_await write_raw(std::move(tail));
    co_return false;  // Connection: close ends the stream
  }
  json::object choice{{"index", 0}, {"finish_reason", finish}};
  if (r.chat) {
    choice["message"] = json::object{{"role", "assistant"}, {"content", utf8::sanitize(text)}};
  } else {
    choice["text"] = utf8::sanitize(r.echo ? r.prompt_text + text : text);
  }
  choice["logprobs"] = logprobs_value();
  json::object body{{"id", id},
                    {"object", r.chat ? "chat.completion" : "text_completion"},
                    {"created", created},
                    {"model", ctx_.options().model_name},
                    {"choices", json::array{choice}},
                    {"usage", usage}};
  Response res = make(http::status::ok, json::serialize(body), "application/json");
  co_return co_await write(std::move(res));
}

HttpError HttpConnection::refusal(const Generation::Failure& f, int positions) const {
  switch (f.kind) {
    case Generation::Failure::Kind::never_fits:
      return HttpError{http::status::bad_request,
                       "this request may grow to " + std::to_string(positions) +
                           " positions: more KV memory than the whole --kv-budget-mb",
                       "invalid_request_error", "kv_budget_exceeded"};
    case Generation::Failure::Kind::timed_out:
      return HttpError{http::status::service_unavailable, "KV cache memory budget exhausted", "server_error",
                       "server_busy"};
    case Generation::Failure::Kind::no_memory:
      return HttpError{http::status::service_unavailable, "the server is out of memory for KV blocks", "server_error"};
    case Generation::Failure::Kind::shutting_down:
      break;
  }
  return HttpError{http::status::service_unavailable, "server shutting down", "server_error", "shutting_down"};
}

}  // namespace

asio::awaitable<void> serve_http_connection(tcp::socket socket, ServerContext& ctx, HttpOptions opts) {
  HttpConnection c(std::move(socket), ctx, opts);
  co_await c.run();
}

}  // namespace llamawire

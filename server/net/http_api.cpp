#include "server/net/http_api.hpp"

#include "server/net/http_reply.hpp"
#include "server/net/http_request.hpp"

#include "common/log.hpp"
#include "common/sampler.hpp"
#include "common/tokenizer.hpp"
#include "common/frame.hpp"
#include "common/utf8.hpp"
#include "server/engine/strand_signal.hpp"
#include "server/net/listener.hpp"
#include "server/net/web_assets.hpp"

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/json.hpp>

#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <functional>
#include <memory>
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

// One choice of a generation request while it runs.
struct ChoiceRun {
  explicit ChoiceRun(ChoiceOutput o) : out(std::move(o)) {}
  ChoiceOutput out;
  const char* finish = "length";
  int generated = 0;      // tokens drawn (those after a stop string included)
  int cached_tokens = 0;  // prompt positions the prefix cache supplied
  bool cut = false;       // stopped by a forced shutdown
  std::optional<HttpError> failure;
  std::function<void()> on_first;  // called at its first event
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
  Response preflight(const Request& req);  // OPTIONS (CORS)
  // The chat page (/), /health, /metrics, /v1/models, /props; nullopt for any other path or
  // method.
  std::optional<Response> info(const std::string& path, http::verb method);
  // POST /v1/completions, /v1/chat/completions, /v1/embeddings: parsed off the network
  // thread, then run. False when the connection must close.
  asio::awaitable<bool> model_endpoint(const Request& req, const std::string& path);
  // Runs one generation; streams SSE chunks when asked. Returns false when the connection
  // must close.
  asio::awaitable<bool> generate(const GenRequest& r);
  asio::awaitable<bool> generate_admitted(const GenRequest& r, int max_new);
  // Waits for n session slots (false: not admitted, or the client went away).
  asio::awaitable<bool> take_slots(int n);
  Response not_admitted();  // the reply when take_slots fails with the client still there
  // /v1/embeddings, admitted or refused.
  asio::awaitable<bool> embed(const EmbedRequest& r);
  // The reply's shared fields (meta_) and stream head, and its choices' state.
  std::vector<std::unique_ptr<ChoiceRun>> begin_reply(const GenRequest& r);
  // Runs every choice's generation (params(i): choice i's) to its end.
  asio::awaitable<void> run_choices(const GenRequest& r, std::vector<std::unique_ptr<ChoiceRun>>& choices,
                                    const std::function<Generation::Params(int)>& params);
  // One choice's generation, its tokens into c.out (and, streamed, out to the client).
  asio::awaitable<void> run_choice(const GenRequest& r, ChoiceRun& c, Generation::Params p);
  // Writes what is unwritten_ (the head first), unless another coroutine is writing.
  asio::awaitable<void> flush_stream();
  // The reply's end: the last events of a stream, or the whole reply, or the failure.
  asio::awaitable<bool> finish_reply(const GenRequest& r, const std::vector<std::unique_ptr<ChoiceRun>>& choices,
                                     clock::time_point t0);
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
  std::vector<Generation*> gens_;  // the generations running (a request's choices)
  // The reply being generated: its shared fields, and while it streams, the head (sent
  // with the first chunk) and the chunks not yet written (one coroutine writes at a time).
  ReplyMeta meta_;
  std::string stream_head_;
  bool head_sent_ = false;
  std::string unwritten_;
  bool writing_ = false;
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
    const bool open_path = path == "/health" || path == "/" || path == "/index.html";  // no key needed
    if (!open_path && h.method() != http::verb::options && !tenant) {
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
  for (const char* p : {"/completions", "/chat/completions", "/models", "/embeddings"}) {
    if (path == p) path = "/v1" + path;
  }
  const auto method = req.method();
  std::optional<Response> res;
  if (method == http::verb::options) {
    res = preflight(req);
  } else if (auto got = info(path, method)) {
    res = std::move(got);
  } else if (method == http::verb::post && (path == "/tokenize" || path == "/detokenize")) {
    const bool encode = path == "/tokenize";
    auto answer = co_await ctx_.off_network([&] {
      return encode ? tokenize_request(req.body(), ctx_.tokenizer()) : detokenize_request(req.body(), ctx_.tokenizer());
    });
    res = std::holds_alternative<HttpError>(answer)
              ? error(std::get<HttpError>(answer))
              : make(http::status::ok, std::move(std::get<std::string>(answer)), "application/json");
  } else if (method == http::verb::post &&
             (path == "/v1/embeddings" || path == "/v1/completions" || path == "/v1/chat/completions")) {
    close = !co_await model_endpoint(req, path);
    co_return;
  } else {
    const bool known = path == "/" || path == "/index.html" || path == "/health" || path == "/metrics" || path == "/v1/models" || path == "/v1/completions" ||
                       path == "/v1/embeddings" || path == "/v1/chat/completions" || path == "/props" ||
                       path == "/tokenize" || path == "/detokenize";
    res = error({known ? http::status::method_not_allowed : http::status::not_found,
                 known ? "method not allowed" : "no such endpoint: " + path});
  }
  close = !co_await write(std::move(*res));
}

HttpConnection::Response HttpConnection::preflight(const Request& req) {
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
  return res;
}

std::optional<HttpConnection::Response> HttpConnection::info(const std::string& path, http::verb method) {
  if (path == "/health" && (method == http::verb::get || method == http::verb::head)) {
    const bool ok = !ctx_.draining();
    return make(ok ? http::status::ok : http::status::service_unavailable,
                ok ? R"({"status":"ok"})" : R"({"status":"draining"})", "application/json");
  }
  if ((path == "/" || path == "/index.html") && (method == http::verb::get || method == http::verb::head)) {
    // The chat page: static, compiled in, needing no key to load (its API calls ask for one).
    Response res = make(http::status::ok, std::string(web_index_html()), "text/html; charset=utf-8");
    res.set("Content-Security-Policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
            "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'");
    res.set("X-Content-Type-Options", "nosniff");
    res.set(http::field::cache_control, "no-cache");
    return res;
  }
  if (method != http::verb::get) return std::nullopt;
  if (path == "/metrics") return make(http::status::ok, ctx_.metrics_text(), "text/plain; version=0.0.4");
  if (path == "/v1/models") {
    json::object model{{"id", ctx_.options().model_name}, {"object", "model"}, {"created", 0}, {"owned_by", "llamawire"}};
    json::object body{{"object", "list"}, {"data", json::array{model}}};
    return make(http::status::ok, json::serialize(body), "application/json");
  }
  if (path == "/props") {
    const auto& c = ctx_.weights().config();
    json::object body{{"model", ctx_.options().model_name},        {"n_ctx", ctx_.context()},
                      {"n_vocab", c.vocab_size},                    {"chat_template", ctx_.chat_template().name()},
                      {"total_slots", ctx_.options().max_sessions}, {"bos_token", ctx_.special_tokens().bos},
                      {"eos_token", ctx_.special_tokens().eos},     {"prefix_cache", ctx_.prefix_cache() != nullptr}};
    return make(http::status::ok, json::serialize(body), "application/json");
  }
  return std::nullopt;
}

asio::awaitable<bool> HttpConnection::model_endpoint(const Request& req, const std::string& path) {
  ctx_.counters().http_requests_total++;
  if (ctx_.draining()) {
    Response res = error({http::status::service_unavailable, "server shutting down", "server_error", "shutting_down"});
    co_return co_await write(std::move(res));
  }
  // Parsing and tokenizing grow with the body (up to --http-max-body): off this thread.
  if (path == "/v1/embeddings") {
    auto parsed = co_await ctx_.off_network(
        [&] { return parse_embedding_request(req.body(), ctx_.tokenizer(), ctx_.context()); });
    if (auto* e = std::get_if<HttpError>(&parsed)) {
      Response res = error(*e);
      co_return co_await write(std::move(res));
    }
    co_return co_await embed(std::get<EmbedRequest>(parsed));
  }
  const bool chat = path == "/v1/chat/completions";
  auto parsed = co_await ctx_.off_network(
      [&] { return parse_generation_request(chat, req.body(), ctx_.tokenizer(), ctx_.chat_template(), ctx_.context()); });
  if (auto* e = std::get_if<HttpError>(&parsed)) {
    Response res = error(*e);
    co_return co_await write(std::move(res));
  }
  co_return co_await generate(std::get<GenRequest>(parsed));
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
  if (r.n > ctx_.options().max_sessions) {
    Response res = error({http::status::bad_request,
                          "'n' of " + std::to_string(r.n) + " is more than the server's " +
                              std::to_string(ctx_.options().max_sessions) + " sessions (--max-sessions)"});
    co_return co_await write(std::move(res));
  }
  // One admission rule for both protocols: a session slot per choice while it runs (all of
  // a request's at once), then (in each Generation) KV memory for all it may grow to.
  if (!co_await take_slots(r.n)) {
    if (peer_gone_) co_return false;
    Response res = not_admitted();
    co_return co_await write(std::move(res));
  }
  struct Slot {
    Admission& a;
    int n;
    ~Slot() { a.give_slot(n); }
  } slot_guard{ctx_.admission(), r.n};
  auto done = co_await (generate_admitted(r, max_new) || watch_peer());
  co_return done.index() == 0 && std::get<0>(done);
}

asio::awaitable<bool> HttpConnection::take_slots(int n) {
  peer_gone_ = false;
  // The wait ends early when the client goes away (watch_peer never finishes first: it
  // only flags it and interrupts the wait).
  auto take = [&]() -> asio::awaitable<Admission::Status> {
    co_return co_await ctx_.admission().take_slot([this] { return peer_gone_ || ctx_.draining(); }, n);
  };
  auto w = co_await (take() || watch_peer());
  co_return w.index() == 0 && std::get<0>(w) == Admission::Status::admitted;
}

HttpConnection::Response HttpConnection::not_admitted() {
  return error(ctx_.draining() ? HttpError{http::status::service_unavailable, "server shutting down", "server_error",
                                           "shutting_down"}
                               : HttpError{http::status::service_unavailable,
                                           "server busy: all " + std::to_string(ctx_.options().max_sessions) +
                                               " sessions in use (binary sessions and HTTP generations)",
                                           "server_error", "server_busy"});
}

asio::awaitable<bool> HttpConnection::embed(const EmbedRequest& r) {
  const auto t0 = clock::now();
  if (!co_await take_slots(1)) {
    if (peer_gone_) co_return false;
    Response res = not_admitted();
    co_return co_await write(std::move(res));
  }
  struct Slot {
    Admission& a;
    ~Slot() { a.give_slot(); }
  } slot_guard{ctx_.admission()};
  auto run = [&]() -> asio::awaitable<bool> {
    json::array data;
    int tokens = 0;
    std::optional<HttpError> failure;
    // One input after another (each one batched with whatever else the server runs).
    for (std::size_t i = 0; i < r.inputs.size() && !failure && !peer_gone_; ++i) {
      Sequence seq(ctx_.weights().config(), ctx_.context(), &ctx_.kv_budget());
      Generation::Params p;
      p.prompt = r.inputs[i];
      p.embed = true;
      p.received = t0;
      p.tenant = tenant_;
      const int positions = static_cast<int>(p.prompt.size());
      Generation gen(ctx_.generation_env(), seq, std::move(p));
      gens_.push_back(&gen);
      gen.start(co_await asio::this_coro::executor);
      if (peer_gone_) gen.cancel(Generation::Reason::closed);
      for (;;) {
        const Generation::Event e = co_await gen.next();
        if (const auto* l = std::get_if<Generation::Logits>(&e)) {
          json::object item{{"object", "embedding"}, {"index", i}};
          if (r.base64) {
            // The floats' little-endian bytes, as the OpenAI API sends them.
            item["embedding"] = base64_encode(std::as_bytes(l->values));
          } else {
            json::array v;
            v.reserve(l->values.size());
            for (const float x : l->values) v.push_back(x);
            item["embedding"] = std::move(v);
          }
          data.push_back(std::move(item));
          continue;
        }
        if (const auto* f = std::get_if<Generation::Failure>(&e)) failure = refusal(*f, positions);
        if (const auto* end = std::get_if<Generation::End>(&e)) {
          ctx_.count_prompt(*end);
          tokens += end->prompt_tokens;
          if (end->reason == Generation::Reason::shutdown) {
            failure = HttpError{http::status::service_unavailable, "server shutting down", "server_error", "shutting_down"};
          }
        }
        break;
      }
      std::erase(gens_, &gen);
    }
    ctx_.counters().http_prompt_tokens_total += static_cast<std::uint64_t>(tokens);
    log::info("http embeddings inputs=", r.inputs.size(), " tokens=", tokens,
              " seconds=", std::chrono::duration<double>(clock::now() - t0).count());
    if (peer_gone_) co_return false;
    if (failure) {
      Response res = error(*failure);
      co_return co_await write(std::move(res)) && keep_alive_;
    }
    json::object body{{"object", "list"},
                      {"data", std::move(data)},
                      {"model", ctx_.options().model_name},
                      {"usage", json::object{{"prompt_tokens", tokens}, {"total_tokens", tokens}}}};
    Response res = make(http::status::ok, json::serialize(body), "application/json");
    co_return co_await write(std::move(res));
  };
  auto done = co_await (run() || watch_peer());
  co_return done.index() == 0 && std::get<0>(done);
}

void HttpConnection::on_peer_gone() {
  peer_gone_ = true;
  ctx_.admission().interrupt();
  for (Generation* g : gens_) g->cancel(Generation::Reason::closed);
}

asio::awaitable<void> HttpConnection::flush_stream() {
  if (writing_) co_return;  // the writer takes what is added meanwhile
  writing_ = true;
  while (!unwritten_.empty() && !peer_gone_) {
    std::string out = std::move(unwritten_);
    unwritten_.clear();
    if (!head_sent_) {
      head_sent_ = true;
      out = std::move(stream_head_) + out;
    }
    if (!co_await write_raw(std::move(out))) on_peer_gone();  // the client went away: stop generating
  }
  writing_ = false;
}

asio::awaitable<void> HttpConnection::run_choice(const GenRequest& r, ChoiceRun& c, Generation::Params p) {
  Sequence seq(ctx_.weights().config(), ctx_.context(), &ctx_.kv_budget());
  const int positions = p.limit_pos;
  Generation gen(ctx_.generation_env(), seq, std::move(p));
  gens_.push_back(&gen);
  struct Unlist {
    std::vector<Generation*>& gens;
    Generation* g;
    ~Unlist() { std::erase(gens, g); }
  } unlist{gens_, &gen};
  gen.start(co_await asio::this_coro::executor);
  if (peer_gone_) gen.cancel(Generation::Reason::closed);
  for (bool first = true;; first = false) {
    const Generation::Event e = co_await gen.next();
    // The others start once the first has run the prompt (or ended); not after a refusal.
    if (first && c.on_first && !std::holds_alternative<Generation::Failure>(e)) c.on_first();
    if (const auto* t = std::get_if<Generation::Token>(&e)) {
      if (peer_gone_ || c.out.stopped()) continue;  // drawn ahead, after the end: dropped
      ctx_.observe_latency(*t);
      ++c.generated;
      if (c.out.add(t->id, t->logprobs.get())) {
        c.finish = "stop";  // a stop string
        gen.cancel(Generation::Reason::cancelled);
      }
      if (r.stream) {
        unwritten_ += c.out.stream(meta_, false);
        if (!gen.has_unread()) co_await flush_stream();  // one write for what is waiting
      }
      continue;
    }
    if (const auto* f = std::get_if<Generation::Failure>(&e)) {
      c.failure = refusal(*f, positions);
    } else if (const auto* end = std::get_if<Generation::End>(&e)) {
      ctx_.count_prompt(*end);
      c.cached_tokens = end->prompt_cached;
      if (end->reason == Generation::Reason::bos || end->reason == Generation::Reason::eos ||
          end->reason == Generation::Reason::grammar) {
        c.finish = "stop";
      }
      c.cut = end->reason == Generation::Reason::shutdown;
    }
    break;
  }
  // One choice that cannot run fails the request: the others stop too.
  if (c.failure) {
    for (Generation* g : gens_) g->cancel(Generation::Reason::cancelled);
  }
  if (r.stream && !c.failure && !peer_gone_) unwritten_ += c.out.stream(meta_, true);
}

asio::awaitable<bool> HttpConnection::generate_admitted(const GenRequest& r, int max_new) {
  const auto t0 = clock::now();
  const Tokenizer& tok = ctx_.tokenizer();
  const int n_prompt = static_cast<int>(r.prompt.size());
  // Choice i draws with seed + i (a random seed when none is given).
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
  ctx_.counters().http_active++;
  struct Guard {
    ServerCounters& c;
    ~Guard() { c.http_active--; }
  } guard{ctx_.counters()};
  std::vector<std::unique_ptr<ChoiceRun>> choices = begin_reply(r);
  if (max_new > 0) {
    const std::function<Generation::Params(int)> params = [&](int i) {
      Generation::Params p;
      p.prompt = r.prompt;
      p.sampling = r.sampling;
      p.sampling->seed = seed + static_cast<std::uint64_t>(i);
      if (!r.grammar.empty()) p.grammar = grammar;
      p.logprobs = r.logprobs;
      p.limit_pos = n_prompt + max_new - 1;
      // Chat stops at the end of the turn; a completion too with a GGUF vocabulary (as
      // llama.cpp's server does), while a llama2.c model runs on past EOS as llama2.c does.
      p.stop_on_eos = r.chat || tok.kind() != VocabKind::llama2c;
      p.received = t0;
      p.tenant = tenant_;
      return p;
    };
    co_await run_choices(r, choices, params);
  }
  co_return co_await finish_reply(r, choices, t0);
}

std::vector<std::unique_ptr<ChoiceRun>> HttpConnection::begin_reply(const GenRequest& r) {
  const std::uint64_t number = g_request_counter.fetch_add(1);
  meta_ = ReplyMeta{std::string(r.chat ? "chatcmpl-" : "cmpl-") + std::to_string(number),
                    std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count(),
                    ctx_.options().model_name, r.chat};
  const int prev = r.prompt.empty() ? ctx_.special_tokens().bos : r.prompt.back();
  std::vector<std::unique_ptr<ChoiceRun>> choices;
  for (int i = 0; i < r.n; ++i) {
    const std::string call_ids = "call_" + std::to_string(number) + "_" + std::to_string(i);
    choices.push_back(std::make_unique<ChoiceRun>(ChoiceOutput(i, r, ctx_.tokenizer(), prev, call_ids)));
  }
  // The stream's head goes out with its first chunk (so a refusal can still be a plain
  // error reply).
  unwritten_.clear();
  head_sent_ = false;
  stream_head_ = "HTTP/1.1 200 OK\r\nServer: llamawire\r\nContent-Type: text/event-stream\r\n"
                 "Cache-Control: no-cache\r\nConnection: close\r\n";
  if (!cors_allow_.empty()) stream_head_ += "Access-Control-Allow-Origin: " + cors_allow_ + "\r\nVary: Origin\r\n";
  stream_head_ += "\r\n";
  for (const auto& c : choices) stream_head_ += c->out.head(meta_);
  return choices;
}

asio::awaitable<void> HttpConnection::run_choices(const GenRequest& r, std::vector<std::unique_ptr<ChoiceRun>>& choices,
                                                  const std::function<Generation::Params(int)>& params) {
  // The choices run as separate generations, batched together, as coroutines on this
  // connection's strand. The first runs the prompt alone: with the prefix cache the others
  // then attach its blocks instead of computing them again.
  const auto ex = co_await asio::this_coro::executor;
  StrandSignal ended(ex);
  int running = 0;
  auto spawn = [&](int i) {
    ++running;
    ChoiceRun* c = choices[static_cast<std::size_t>(i)].get();
    asio::co_spawn(ex, run_choice(r, *c, params(i)), [&running, &ended, c](std::exception_ptr e) {
      if (e) {
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& x) {
          log::error("http: a choice failed: ", x.what());
        } catch (...) {
          log::error("http: a choice failed");
        }
        c->failure = HttpError{http::status::internal_server_error, "internal error", "server_error"};
      }
      --running;
      ended.notify();
    });
  };
  choices[0]->on_first = [&] {
    for (int i = 1; i < r.n; ++i) spawn(i);
  };
  spawn(0);
  while (running > 0) co_await ended.wait();
}

asio::awaitable<bool> HttpConnection::finish_reply(const GenRequest& r,
                                                   const std::vector<std::unique_ptr<ChoiceRun>>& choices,
                                                   clock::time_point t0) {
  const int n_prompt = static_cast<int>(r.prompt.size());
  int generated = 0;
  bool cut = false;
  std::optional<HttpError> failure;
  for (const auto& c : choices) {
    generated += c->generated;
    cut = cut || c->cut;
    if (c->failure && !failure) failure = c->failure;
  }
  ctx_.counters().http_prompt_tokens_total += static_cast<std::uint64_t>(n_prompt);
  ctx_.counters().http_generated_tokens_total += static_cast<std::uint64_t>(generated);
  log::info("http ", r.chat ? "chat" : "completion", " prompt_tokens=", n_prompt, " choices=", r.n,
            " generated_tokens=", generated,
            " finish=", peer_gone_ ? "client_gone" : failure ? "refused" : cut ? "shutdown" : choices[0]->finish,
            " seconds=", std::chrono::duration<double>(clock::now() - t0).count());
  if (peer_gone_) co_return false;  // nobody to answer
  if (cut && !failure) {
    failure = HttpError{http::status::service_unavailable,
                        "server shutting down: the generation was stopped after " + std::to_string(generated) + " tokens",
                        "server_error", "shutting_down"};
  }
  if (failure) {
    if (head_sent_) {
      ctx_.counters().http_errors_total++;
      std::string last = std::move(unwritten_) + "data: " + error_body(*failure) + "\n\n";
      co_await write_raw(std::move(last));
      co_return false;
    }
    if (failure->code == "shutting_down") keep_alive_ = false;
    Response res = error(*failure);
    co_return co_await write(std::move(res)) && keep_alive_;
  }
  // The prompt counts once, its cached part as the first choice found it.
  const json::value usage = json::object{{"prompt_tokens", n_prompt},
                                         {"completion_tokens", generated},
                                         {"total_tokens", n_prompt + generated},
                                         {"prompt_tokens_details", json::object{{"cached_tokens", choices[0]->cached_tokens}}}};
  if (r.stream) {
    // Each choice's last event, in order; the last one carries the usage too.
    for (std::size_t i = 0; i < choices.size(); ++i) {
      unwritten_ += choices[i]->out.finish_event(meta_, choices[i]->finish, i + 1 == choices.size() ? &usage : nullptr);
    }
    if (r.include_usage) {
      // stream_options.include_usage: one more chunk, with no choices, as OpenAI sends it.
      auto u = meta_.envelope(json::array{}, true);
      u["usage"] = usage;
      unwritten_ += sse_event(u);
    }
    unwritten_ += "data: [DONE]\n\n";
    co_await flush_stream();
    co_return false;  // Connection: close ends the stream
  }
  json::array out;
  for (const auto& c : choices) out.push_back(c->out.whole(c->finish));
  json::object body = meta_.envelope(std::move(out), false);
  body["usage"] = usage;
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

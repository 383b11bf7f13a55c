#include "server/net/http_api.hpp"

#include "server/net/http_request.hpp"

#include "common/auth.hpp"
#include "common/log.hpp"
#include "common/sampler.hpp"
#include "common/tokenizer.hpp"
#include "server/net/listener.hpp"

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/json.hpp>

#include <atomic>
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

std::atomic<std::uint64_t> g_request_counter{0};

class HttpConnection {
 public:
  HttpConnection(tcp::socket socket, ServerContext& ctx, HttpOptions opts)
      : stream_(std::move(socket)), ctx_(ctx), opts_(opts) {
    ctx_.counters().connections_open++;
    if (ctx_.tls() != nullptr) tls_.emplace(std::move(stream_), *ctx_.tls());
    // Registered like a session so that a drain closes idle keep-alive connections and
    // lets running generations finish.
    registry_id_ = ctx_.register_session(lowest().get_executor(), [this] {
      if (!busy_) {
        boost::system::error_code ec;
        lowest().socket().close(ec);
      }
    });
  }
  ~HttpConnection() {
    ctx_.unregister_session(registry_id_);
    ctx_.counters().connections_open--;
  }
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;

  asio::awaitable<void> run();

 private:
  using Response = http::response<http::string_body>;

  Response make(http::status st, std::string body, const char* type, unsigned version, bool keep_alive) {
    Response res{st, version};
    res.set(http::field::server, "llamawire");
    res.set(http::field::content_type, type);
    res.keep_alive(keep_alive);
    res.body() = std::move(body);
    res.prepare_payload();
    return res;
  }
  Response error(const HttpError& e, unsigned version, bool keep_alive) {
    ctx_.counters().http_errors_total++;
    auto res = make(e.status, error_body(e), "application/json", version, keep_alive);
    if (e.status == http::status::unauthorized) res.set(http::field::www_authenticate, "Bearer");
    return res;
  }

  asio::awaitable<bool> write(Response res) {
    if (tls_) {
      auto [ec, n] = co_await http::async_write(*tls_, res, asio::as_tuple(asio::use_awaitable));
      co_return !ec;
    }
    auto [ec, n] = co_await http::async_write(stream_, res, asio::as_tuple(asio::use_awaitable));
    co_return !ec;
  }
  asio::awaitable<bool> write_raw(std::string data) {
    lowest().expires_after(ctx_.options().write_timeout);
    if (tls_) {
      auto [ec, n] = co_await asio::async_write(*tls_, asio::buffer(data), asio::as_tuple(asio::use_awaitable));
      co_return !ec;
    }
    auto [ec, n] = co_await asio::async_write(stream_, asio::buffer(data), asio::as_tuple(asio::use_awaitable));
    co_return !ec;
  }

  // Runs one generation; streams SSE chunks when asked. Returns false when the connection
  // must close.
  asio::awaitable<bool> generate(const GenRequest& r, unsigned version, bool keep_alive);

  beast::tcp_stream& lowest() { return tls_ ? beast::get_lowest_layer(*tls_) : stream_; }

  beast::tcp_stream stream_;                                    // plain connections
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls_;    // TLS connections (the stream moves in)
  ServerContext& ctx_;
  HttpOptions opts_;
  std::uint64_t registry_id_ = 0;
  bool busy_ = false;  // a request is being handled (not waiting for the next one)
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
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(opts_.max_body_bytes);
    parser.header_limit(16 * 1024);
    lowest().expires_after(ctx_.options().idle_timeout);
    std::tuple<boost::system::error_code, std::size_t> got;
    if (tls_) {
      got = co_await http::async_read(*tls_, buffer, parser, asio::as_tuple(asio::use_awaitable));
    } else {
      got = co_await http::async_read(stream_, buffer, parser, asio::as_tuple(asio::use_awaitable));
    }
    const auto ec = std::get<0>(got);
    if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == asio::error::connection_reset ||
        ec == asio::error::eof) {
      break;
    }
    if (ec) {
      const bool too_big = ec == http::error::body_limit;
      Response reply0 = error({too_big ? http::status::payload_too_large : http::status::bad_request,
                            too_big ? "request body larger than " + std::to_string(opts_.max_body_bytes) + " bytes"
                                    : "malformed HTTP request: " + ec.message()},
                           11, false);
      co_await write(std::move(reply0));
      break;
    }
    auto req = parser.release();
    busy_ = true;
    struct Idle {
      bool& b;
      ~Idle() { b = false; }
    } idle{busy_};
    const unsigned version = req.version();
    const bool keep_alive = req.keep_alive();
    lowest().expires_after(ctx_.options().write_timeout);
    const std::string target(req.target());
    const std::string path = target.substr(0, target.find('?'));
    const auto method = req.method();

    if (path == "/health" && (method == http::verb::get || method == http::verb::head)) {
      const bool ok = !ctx_.draining();
      Response reply1 = make(ok ? http::status::ok : http::status::service_unavailable,
                               ok ? R"({"status":"ok"})" : R"({"status":"draining"})", "application/json", version,
                               keep_alive);
      if (!co_await write(std::move(reply1))) {
        break;
      }
      if (!keep_alive) break;
      continue;
    }
    // Everything else needs the key when one is set.
    if (!ctx_.options().api_key.empty()) {
      const auto auth = req[http::field::authorization];
      const std::string_view prefix = "Bearer ";
      const bool ok = auth.size() > prefix.size() && auth.substr(0, prefix.size()) == prefix &&
                      constant_time_equal(ctx_.options().api_key, std::string_view(auth).substr(prefix.size()));
      if (!ok) {
        log::warn("http ", log::quoted(req.method_string()), " ", log::quoted(path), ": rejected, missing or invalid API key");
        Response reply2 = error({http::status::unauthorized, "missing or invalid API key (Authorization: Bearer ...)",
                                   "invalid_request_error", "invalid_api_key"},
                                  version, keep_alive);
        if (!co_await write(std::move(reply2))) {
          break;
        }
        if (!keep_alive) break;
        continue;
      }
    }
    if (path == "/metrics" && method == http::verb::get) {
      Response reply3 = make(http::status::ok, ctx_.metrics_text(), "text/plain; version=0.0.4", version, keep_alive);
      if (!co_await write(std::move(reply3))) {
        break;
      }
    } else if (path == "/v1/models" && method == http::verb::get) {
      json::object model{{"id", ctx_.options().model_name},
                         {"object", "model"},
                         {"created", 0},
                         {"owned_by", "llamawire"}};
      json::object body{{"object", "list"}, {"data", json::array{model}}};
      Response reply4 = make(http::status::ok, json::serialize(body), "application/json", version, keep_alive);
      if (!co_await write(std::move(reply4))) break;
    } else if ((path == "/v1/completions" || path == "/v1/chat/completions") && method == http::verb::post) {
      ctx_.counters().http_requests_total++;
      std::optional<HttpError> err;
      GenRequest gr;
      if (ctx_.draining()) {
        err = HttpError{http::status::service_unavailable, "server shutting down", "server_error"};
      } else {
        // Parsing and tokenizing grow with the body (up to --http-max-body): off this thread.
        const bool chat = path == "/v1/chat/completions";
        auto parsed = co_await ctx_.off_network(
            [&] { return parse_generation_request(chat, req.body(), ctx_.tokenizer(), ctx_.context()); });
        if (auto* e = std::get_if<HttpError>(&parsed)) {
          err = std::move(*e);
        } else {
          gr = std::move(std::get<GenRequest>(parsed));
        }
      }
      if (err) {
        Response reply5 = error(*err, version, keep_alive);
        if (!co_await write(std::move(reply5))) break;
      } else if (!co_await generate(gr, version, keep_alive)) {
        break;
      }
    } else {
      const bool known = path == "/metrics" || path == "/v1/models" || path == "/v1/completions" ||
                         path == "/v1/chat/completions";
      Response reply6 = error({known ? http::status::method_not_allowed : http::status::not_found,
                                 known ? "method not allowed" : "no such endpoint: " + path},
                                version, keep_alive);
      if (!co_await write(std::move(reply6))) {
        break;
      }
    }
    if (!keep_alive || ctx_.draining()) break;
  }
  lowest().socket().shutdown(tcp::socket::shutdown_both, ignore);
}

asio::awaitable<bool> HttpConnection::generate(const GenRequest& r, unsigned version, bool keep_alive) {
  const auto t0 = clock::now();
  const ModelConfig& cfg = ctx_.weights().config();
  const Tokenizer& tok = ctx_.tokenizer();
  const int context = ctx_.context();
  const int n_prompt = static_cast<int>(r.prompt.size());
  const int room = context - n_prompt;  // positions left for generated tokens (the last is not run)
  const int max_new = r.max_tokens_given || !r.chat ? std::min(r.max_tokens, room) : room;
  const std::uint64_t seed = r.seed != 0 ? r.seed : resolve_seed(0) + g_request_counter.fetch_add(1);
  Sampler sampler(cfg.vocab_size, {r.temperature, r.top_p, seed});
  KvCache kv(cfg, context, &ctx_.kv_budget());
  int sampled = 0;  // drawn by `sampler` on the compute threads after each step
  const std::string id = std::string(r.chat ? "chatcmpl-" : "cmpl-") + std::to_string(g_request_counter.fetch_add(1));
  const auto created = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  ctx_.counters().http_active++;
  struct Guard {
    ServerCounters& c;
    ~Guard() { c.http_active--; }
  } guard{ctx_.counters()};

  auto chunk = [&](const std::string& piece, const char* finish) {
    json::object choice{{"index", 0}};
    if (r.chat) {
      json::object delta;
      if (!piece.empty()) delta["content"] = piece;
      choice["delta"] = delta;
    } else {
      choice["text"] = piece;
      choice["logprobs"] = nullptr;
    }
    choice["finish_reason"] = finish ? json::value(finish) : json::value(nullptr);
    json::object o{{"id", id},
                   {"object", r.chat ? "chat.completion.chunk" : "text_completion"},
                   {"created", created},
                   {"model", ctx_.options().model_name},
                   {"choices", json::array{choice}}};
    return "data: " + json::serialize(o) + "\n\n";
  };

  // Steps through the scheduler; false when the server is stopping or KV memory is gone.
  std::optional<HttpError> failure;
  auto step = [&](const std::vector<int>& tokens, int start) -> asio::awaitable<bool> {
    if (!kv.reserve(start + static_cast<int>(tokens.size()))) {
      const auto deadline = clock::now() + ctx_.options().queue_timeout;
      asio::steady_timer t(co_await asio::this_coro::executor);
      bool got = false;
      while (clock::now() < deadline && !(got = kv.reserve(start + static_cast<int>(tokens.size())))) {
        t.expires_after(std::chrono::milliseconds(5));
        co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
      }
      if (!got) {
        failure = HttpError{http::status::service_unavailable, "KV cache memory budget exhausted", "server_error"};
        co_return false;
      }
    }
    boost::system::error_code ec;
    const Scheduler::Output out{nullptr, &sampler, &sampled};
    co_await ctx_.scheduler().async_step(kv, tokens, start, out, true, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) failure = HttpError{http::status::service_unavailable, "server shutting down", "server_error"};
    co_return !ec;
  };

  if (r.stream) {
    std::string reply0 = "HTTP/1.1 200 OK\r\nServer: llamawire\r\nContent-Type: text/event-stream\r\n"
                            "Cache-Control: no-cache\r\nConnection: close\r\n\r\n";
    if (!co_await write_raw(std::move(reply0))) {
      co_return false;
    }
    if (r.chat) {
      // First chunk announces the role, as OpenAI's stream does.
      json::object delta{{"role", "assistant"}, {"content", ""}};
      json::object choice{{"index", 0}, {"delta", delta}, {"finish_reason", nullptr}};
      json::object o{{"id", id}, {"object", "chat.completion.chunk"}, {"created", created},
                     {"model", ctx_.options().model_name}, {"choices", json::array{choice}}};
      std::string reply1 = "data: " + json::serialize(o) + "\n\n";
      if (!co_await write_raw(std::move(reply1))) co_return false;
    }
  }

  std::string text;        // everything generated so far (after stop handling)
  std::size_t sent = 0;    // bytes of `text` already streamed
  std::size_t holdback = 0;
  for (const auto& s : r.stop) holdback = std::max(holdback, s.size() - 1);
  const char* finish = "length";
  int generated = 0;
  bool ok = true;
  if (max_new > 0) ok = co_await step(r.prompt, 0);
  int pos = n_prompt;
  int prev = r.prompt.empty() ? kBosToken : r.prompt.back();
  auto last_at = t0;
  while (ok && generated < max_new) {
    const int next = sampled;
    if (next == kBosToken || (r.chat && next == kEosToken)) {
      finish = "stop";
      break;
    }
    ++generated;
    const auto now = clock::now();
    (generated == 1 ? ctx_.counters().ttft_seconds : ctx_.counters().itl_seconds)
        .observe(std::chrono::duration<double>(now - last_at).count());
    last_at = now;
    text += printable_piece(tok.decode(prev, next));
    prev = next;
    bool stopped = false;
    for (const auto& s : r.stop) {
      const auto at = text.find(s, sent > s.size() ? sent - s.size() : 0);
      if (at != std::string::npos) {
        text.resize(at);
        stopped = true;
      }
    }
    if (r.stream) {
      const std::size_t safe = stopped ? text.size() : (text.size() > holdback ? text.size() - holdback : 0);
      if (safe > sent) {
        std::string reply2 = chunk(text.substr(sent, safe - sent), nullptr);
        if (!co_await write_raw(std::move(reply2))) {
          ctx_.counters().http_generated_tokens_total += static_cast<std::uint64_t>(generated);
          co_return false;  // the client went away: stop generating
        }
        sent = safe;
      }
    }
    if (stopped) {
      finish = "stop";
      break;
    }
    if (generated >= max_new || ctx_.forced()) break;
    const std::vector<int> one{next};
    ok = co_await step(one, pos);
    ++pos;
  }
  ctx_.counters().http_prompt_tokens_total += static_cast<std::uint64_t>(n_prompt);
  ctx_.counters().http_generated_tokens_total += static_cast<std::uint64_t>(generated);
  if (!ok) {
    if (r.stream) {
      std::string reply3 = "data: " + error_body(*failure) + "\n\n";
      co_await write_raw(std::move(reply3));
      co_return false;
    }
    Response reply7 = error(*failure, version, keep_alive);
    co_return co_await write(std::move(reply7));
  }
  json::object usage{{"prompt_tokens", n_prompt}, {"completion_tokens", generated}, {"total_tokens", n_prompt + generated}};
  if (r.stream) {
    std::string reply4 = chunk(text.substr(sent), nullptr);
    if (text.size() > sent && !co_await write_raw(std::move(reply4))) co_return false;
    std::string last = chunk("", finish);
    // The final chunk carries the usage counts too.
    auto obj = json::parse(last.substr(6)).as_object();
    obj["usage"] = usage;
    std::string reply5 = "data: " + json::serialize(obj) + "\n\ndata: [DONE]\n\n";
    co_await write_raw(std::move(reply5));
    co_return false;  // Connection: close ends the stream
  }
  json::object choice{{"index", 0}, {"finish_reason", finish}};
  if (r.chat) {
    choice["message"] = json::object{{"role", "assistant"}, {"content", text}};
  } else {
    choice["text"] = text;
    choice["logprobs"] = nullptr;
  }
  json::object body{{"id", id},
                    {"object", r.chat ? "chat.completion" : "text_completion"},
                    {"created", created},
                    {"model", ctx_.options().model_name},
                    {"choices", json::array{choice}},
                    {"usage", usage}};
  log::info("http ", r.chat ? "chat" : "completion", " prompt_tokens=", n_prompt, " generated_tokens=", generated,
            " finish=", finish, " seconds=", std::chrono::duration<double>(clock::now() - t0).count());
  Response reply8 = make(http::status::ok, json::serialize(body), "application/json", version, keep_alive);
  co_return co_await write(std::move(reply8));
}


}  // namespace

asio::awaitable<void> serve_http_connection(tcp::socket socket, ServerContext& ctx, HttpOptions opts) {
  HttpConnection c(std::move(socket), ctx, opts);
  co_await c.run();
}

}  // namespace llamawire

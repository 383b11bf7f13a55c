#include "server/net/session.hpp"

#include "common/log.hpp"
#include "common/sampler.hpp"

#include <malloc.h>

#include <algorithm>

namespace llamawire {

using namespace asio::experimental::awaitable_operators;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

namespace {

std::string peer_of(const tcp::socket& s) {
  boost::system::error_code ec;
  const auto ep = s.remote_endpoint(ec);
  if (ec) return "unknown";
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}

StopReason to_stop_reason(Generation::Reason r) {
  switch (r) {
    case Generation::Reason::steps: return StopReason::steps;
    case Generation::Reason::context: return StopReason::context;
    case Generation::Reason::bos: return StopReason::bos;
    case Generation::Reason::eos: return StopReason::eos;
    case Generation::Reason::cancelled: return StopReason::cancelled;
    case Generation::Reason::grammar: return StopReason::grammar;  // (only 1.5 clients send grammars)
    case Generation::Reason::shutdown:
    case Generation::Reason::closed: break;
  }
  return StopReason::shutdown;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

asio::awaitable<void> serve_session(tcp::socket socket, ServerContext& ctx) {
  Session s(std::move(socket), ctx);
  co_await s.run();
}

Session::Session(tcp::socket socket, ServerContext& ctx)
    : socket_(std::move(socket)),
      ctx_(ctx),
      ex_(socket_.get_executor()),
      peer_(peer_of(socket_)),
      seq_(ctx.weights().config(), ctx.context(), &ctx.kv_budget()),
      opened_at_(clock::now()),
      last_activity_(opened_at_),
      job_event_(ex_),
      outbox_event_(ex_),
      drained_event_(ex_),
      watchdog_timer_(ex_) {
  ctx_.counters().connections_open++;
  ctx_.counters().connections_total++;
  if (ctx_.tls() != nullptr) tls_.emplace(std::move(socket_), *ctx_.tls());
}

Session::~Session() {
  if (registry_id_ != 0) ctx_.unregister_session(registry_id_);
  if (holder_id_ != 0) ctx_.admission().remove_holder(holder_id_);
  // KV blocks first, so that stats never show a session gone while its blocks are held.
  seq_.kv.release_from(0);
  if (state_ != State::await_hello) {
    ctx_.counters().sessions_active--;
    ctx_.admission().give_slot();
  }
  // The last client gone: hand the heap the sessions used back to the system, so an idle
  // server's RSS returns to its baseline (glibc keeps freed arenas otherwise).
  if (--ctx_.counters().connections_open == 0) ::malloc_trim(0);
}

asio::awaitable<void> Session::run() {
  boost::system::error_code ec;
  lowest().set_option(tcp::no_delay(true), ec);
  registry_id_ = ctx_.register_session(ex_, [this] { on_server_stop(); });
  log::info("session ", registry_id_, " open peer=", peer_, tls_ ? " tls" : "");
  if (tls_) {
    // The TLS handshake gets the handshake budget too; a failed one just closes.
    asio::steady_timer timer(ex_, ctx_.options().handshake_timeout);
    auto r = co_await (tls_->async_handshake(asio::ssl::stream_base::server, asio::as_tuple(asio::use_awaitable)) ||
                       timer.async_wait(asio::as_tuple(asio::use_awaitable)));
    const bool ok = r.index() == 0 && !std::get<0>(std::get<0>(r));
    if (!ok) {
      log::warn("session ", registry_id_, " peer=", peer_, " TLS handshake failed: ",
                r.index() == 0 ? std::get<0>(std::get<0>(r)).message() : std::string("timed out"));
      lowest().close(ec);
      co_return;
    }
  }
  if (ctx_.draining()) on_server_stop();
  co_await (reader() && writer() && generator() && watchdog());
  lowest().shutdown(tcp::socket::shutdown_both, ec);
  lowest().close(ec);
  log::info("session ", registry_id_, " closed peer=", peer_, " prompt_tokens=", tokens_prompt_,
            " generated_tokens=", tokens_generated_, " seconds=", seconds_since(opened_at_));
}

asio::awaitable<std::tuple<boost::system::error_code, std::size_t>> Session::read_exact(asio::mutable_buffer b) {
  if (tls_) co_return co_await asio::async_read(*tls_, b, asio::as_tuple(asio::use_awaitable));
  co_return co_await asio::async_read(socket_, b, asio::as_tuple(asio::use_awaitable));
}

asio::awaitable<std::tuple<boost::system::error_code, std::size_t>> Session::write_all(asio::const_buffer b) {
  if (tls_) co_return co_await asio::async_write(*tls_, b, asio::as_tuple(asio::use_awaitable));
  co_return co_await asio::async_write(socket_, b, asio::as_tuple(asio::use_awaitable));
}

void Session::send(const Message& m, std::uint32_t request_id) {
  if (writer_done_) return;
  auto frame = encode_frame(m, request_id);
  outbox_bytes_ += frame.size();
  outbox_.push_back(std::move(frame));
  outbox_event_.notify();
}

void Session::send_error(errc e, const std::string& message, bool fatal, std::uint32_t request_id) {
  if (e != errc::shutting_down && e != errc::timed_out) ctx_.counters().protocol_errors_total++;
  log::warn("session ", registry_id_, " peer=", peer_, " error ", errc_id(e), ": ", message, fatal ? " (closing)" : "");
  send(msg::Error{to_wire(e), static_cast<std::uint8_t>(fatal ? 1 : 0), message}, request_id);
}

void Session::close_read() {
  boost::system::error_code ec;
  lowest().shutdown(tcp::socket::shutdown_receive, ec);
  set_closing();
}

void Session::set_closing() {
  closing_ = true;
  if (gen_ != nullptr) gen_->cancel(Generation::Reason::closed);
  job_event_.notify();
  drained_event_.notify();
}

void Session::on_server_stop() {
  if (closing_) return;
  if (state_ != State::generating) {
    send_error(errc::shutting_down, "server shutting down", true, 0);
    close_read();
  }
  // A running request finishes (or, when forced, stops at its next token); the generator
  // then closes the session.
}

asio::awaitable<Session::PayloadRead> Session::read_payload(std::uint32_t length, std::vector<std::uint8_t>& payload) {
  constexpr std::size_t kFirstChunk = 16 << 10;
  payload.clear();
  std::size_t got = 0;
  while (got < length) {
    // Doubling chunks: what is held stays within twice what has arrived (plus 16 KiB),
    // whatever length the header announced. The first kMaxHelloFrameBytes of every frame
    // are the connection's own (bounded by --max-connections); the rest comes from the
    // shared budget, so a hog cannot keep others from sending HELLO, PING or CANCEL.
    const std::size_t want = std::min<std::size_t>(length - got, std::max(kFirstChunk, got));
    const std::size_t own = std::max<std::size_t>(got, kMaxHelloFrameBytes);
    const std::size_t charged = got + want <= own ? 0 : got + want - own;
    if (charged > 0 && !ctx_.frame_budget().try_take(charged)) {
      // Every connection's partial frames together are at the limit: skip this frame's
      // bytes (the stream stays in sync) and refuse it.
      std::vector<std::uint8_t> scratch(std::min<std::size_t>(length - got, 4096));
      while (got < length) {
        const std::size_t n = std::min(scratch.size(), length - got);
        auto [ec, r] = co_await read_exact(asio::buffer(scratch.data(), n));
        if (ec) co_return PayloadRead::failed;
        got += n;
      }
      co_return PayloadRead::over_budget;
    }
    frame_bytes_held_ += charged;
    payload.resize(got + want);
    auto [ec, r] = co_await read_exact(asio::buffer(payload.data() + got, want));
    if (ec) co_return PayloadRead::failed;
    got += want;
  }
  co_return PayloadRead::ok;
}

void Session::release_frame_memory(std::vector<std::uint8_t>& payload) {
  ctx_.frame_budget().give_back(frame_bytes_held_);
  frame_bytes_held_ = 0;
  if (payload.capacity() > (64u << 10)) std::vector<std::uint8_t>().swap(payload);
}

asio::awaitable<void> Session::reader() {
  std::array<std::uint8_t, kFrameHeaderBytes> head{};
  std::vector<std::uint8_t> payload;
  bool half_closed = false;
  while (!closing_) {
    // Backpressure: a peer that sends requests but does not read the replies stops being
    // read once its replies pile up; its own sends then block in TCP, and the write
    // timeout cuts it.
    co_await wait_outbox_room();
    if (closing_) break;
    release_frame_memory(payload);
    auto [ec, n] = co_await read_exact(asio::buffer(head));
    if (ec) {
      half_closed = ec == asio::error::eof && n == 0 && !closing_;
      break;
    }
    // Before HELLO only a HELLO-sized frame is taken: an unauthenticated peer holds no more.
    const std::uint32_t limit =
        state_ != State::await_hello ? ctx_.options().max_frame_bytes : std::min(kMaxHelloFrameBytes, ctx_.options().max_frame_bytes);
    const auto h = decode_header(head, limit);
    if (!h) {
      std::string why = h.error().message;
      if (state_ == State::await_hello && h.error().code == make_error_code(errc::frame_too_large)) why += " before HELLO";
      send_error(static_cast<errc>(h.error().code.value()), why, true, raw_request_id(head));
      break;
    }
    const auto got = co_await read_payload(h->length, payload);
    if (got == PayloadRead::failed) break;
    last_activity_ = clock::now();
    if (got == PayloadRead::over_budget) {
      ctx_.counters().frame_refusals++;
      send_error(errc::busy,
                 "server busy: frames still arriving on all connections hold the --frame-memory-mb limit of " +
                     std::to_string(ctx_.frame_budget().limit() >> 20) + " MiB; this frame of " +
                     std::to_string(h->length) + " bytes was skipped",
                 state_ == State::await_hello, h->request_id);
      if (state_ == State::await_hello) break;
      continue;
    }
    auto m = decode_payload(h->type, payload);
    if (!m) {
      const auto code = static_cast<errc>(m.error().code.value());
      if (state_ == State::await_hello) {
        send_error(code, m.error().message, true, h->request_id);
        break;
      }
      send_error(code, m.error().message, false, h->request_id);
      continue;
    }
    if (!handle(*h, std::move(*m))) break;
  }
  release_frame_memory(payload);
  reader_done_ = true;
  // A clean half-close (EOF between frames) lets a request already given finish; anything
  // else (an error, a reset, a fatal frame, a timeout) ends the session now.
  if (!(half_closed && state_ == State::generating)) set_closing();
  job_event_.notify();
  drained_event_.notify();
  outbox_event_.notify();
}

bool Session::validate_sampling(const msg::SamplingExt& x, std::uint32_t rid) {
  if (client_minor_ < 5) {
    send_error(errc::bad_message,
               "GENERATE's sampling extension (flags bit 1) is protocol 1.5; this client's HELLO said 1." +
                   std::to_string(client_minor_),
               false, rid);
    return false;
  }
  const auto vocab = static_cast<std::uint32_t>(ctx_.weights().config().vocab_size);
  for (const auto& [t, b] : x.logit_bias) {
    if (t >= vocab) {
      send_error(errc::token_out_of_range,
                 "logit_bias token " + std::to_string(t) + " is outside [0, " + std::to_string(vocab) + ")", false, rid);
      return false;
    }
  }
  return true;
}

bool Session::validate_tokens(const std::vector<std::uint32_t>& tokens, std::uint32_t start_pos, std::uint32_t rid) {
  const auto vocab = static_cast<std::uint32_t>(ctx_.weights().config().vocab_size);
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] >= vocab) {
      send_error(errc::token_out_of_range,
                 "token " + std::to_string(tokens[i]) + " at index " + std::to_string(i) + " is outside [0, " +
                     std::to_string(vocab) + ")",
                 false, rid);
      return false;
    }
  }
  if (start_pos > static_cast<std::uint32_t>(seq_.position())) {
    send_error(errc::position_out_of_range,
               "start_pos " + std::to_string(start_pos) + " is past the session's position " +
                   std::to_string(seq_.position()),
               false, rid);
    return false;
  }
  if (static_cast<std::uint64_t>(start_pos) + tokens.size() > static_cast<std::uint64_t>(ctx_.context())) {
    send_error(errc::context_full,
               "start_pos " + std::to_string(start_pos) + " + " + std::to_string(tokens.size()) +
                   " tokens exceeds the context of " + std::to_string(ctx_.context()),
               false, rid);
    return false;
  }
  return true;
}

bool Session::handle(const FrameHeader& h, Message m) {
  const auto rid = h.request_id;
  const auto type = message_type(m);
  if (type == MsgType::hello) {
    const auto& hello = std::get<msg::Hello>(m);
    if (state_ != State::await_hello) {
      send_error(errc::bad_message, "HELLO already received", false, rid);
      return true;
    }
    if (hello.major != kProtocolMajor) {
      send_error(errc::version_mismatch,
                 "protocol major " + std::to_string(hello.major) + " not supported; this server speaks " +
                     std::to_string(kProtocolMajor) + "." + std::to_string(kProtocolMinor),
                 true, rid);
      return false;
    }
    const auto tenant = ctx_.tenant_of(hello.api_key);
    if (!tenant) {
      send_error(errc::unauthorized, hello.api_key.empty() ? "an API key is required" : "invalid API key", true, rid);
      return false;
    }
    tenant_ = *tenant;
    if (ctx_.draining()) {
      send_error(errc::shutting_down, "server shutting down", true, rid);
      return false;
    }
    if (!ctx_.admission().try_take_slot()) {
      ctx_.counters().connections_refused++;
      send_error(errc::busy,
                 "server busy: all " + std::to_string(ctx_.options().max_sessions) +
                     " sessions in use (binary sessions and HTTP generations)",
                 true, rid);
      return false;
    }
    ctx_.counters().sessions_active++;
    state_ = State::ready;
    client_minor_ = hello.minor;
    // Between requests this session's cache may be evicted for a waiting request; its
    // tokens stay in seq_ and what it lost is recomputed at its next request.
    holder_id_ = ctx_.admission().add_holder([this] { seq_.evict(); });
    const ModelConfig& c = ctx_.weights().config();
    msg::HelloOk ok;
    ok.dim = static_cast<std::uint32_t>(c.dim);
    ok.hidden_dim = static_cast<std::uint32_t>(c.hidden_dim);
    ok.n_layers = static_cast<std::uint32_t>(c.n_layers);
    ok.n_heads = static_cast<std::uint32_t>(c.n_heads);
    ok.n_kv_heads = static_cast<std::uint32_t>(c.n_kv_heads);
    ok.vocab_size = static_cast<std::uint32_t>(c.vocab_size);
    ok.seq_len = static_cast<std::uint32_t>(c.seq_len);
    ok.context = static_cast<std::uint32_t>(ctx_.context());
    ok.max_frame_bytes = ctx_.options().max_frame_bytes;
    ok.tokenizer_bytes = static_cast<std::uint32_t>(ctx_.tokenizer().raw().size());
    ok.weights = ctx_.weights().weight_type() == WeightType::q8_0 ? 1 : ctx_.weights().weight_type() == WeightType::gguf ? 2 : 0;
    ok.model_name = ctx_.options().model_name;
    send(ok, rid);
    log::info("session ", registry_id_, " hello client=", log::quoted(hello.client_name));
    return true;
  }
  if (state_ == State::await_hello) {
    send_error(errc::not_ready, std::string(message_name(type)) + " before HELLO", true, rid);
    return false;
  }
  switch (type) {
    case MsgType::get_tokenizer: {
      const auto raw = ctx_.tokenizer().raw();
      if (raw.empty()) {
        send_error(errc::unsupported,
                   "this model's vocabulary is byte-level BPE, which a tokenizer.bin cannot describe: use GET_VOCAB "
                   "(protocol 1.3)",
                   false, rid);
        return true;
      }
      send(msg::Tokenizer{std::vector<std::uint8_t>(raw.begin(), raw.end())}, rid);
      return true;
    }
    case MsgType::get_vocab: {
      const Vocab& vocab = ctx_.tokenizer().vocab();
      if (vocab.kind == VocabKind::bpe && client_minor_ < 3) {
        send_error(errc::unsupported,
                   "this model's vocabulary is byte-level BPE, which VOCAB carries from protocol 1.3 on (this client "
                   "speaks 1." + std::to_string(client_minor_) + ")",
                   false, rid);
        return true;
      }
      msg::Vocab v{vocab, std::string(ctx_.chat_template().name()), client_minor_ >= 3};
      v.vocab.chat_template.clear();  // the name travels instead
      send(v, rid);
      return true;
    }
    case MsgType::forward:
    case MsgType::generate: {
      if (state_ == State::generating) {
        send_error(errc::busy, "a request is already running on this session", false, rid);
        return true;
      }
      if (ctx_.draining()) {
        send_error(errc::shutting_down, "server shutting down", true, rid);
        return false;
      }
      Request job;
      job.request_id = rid;
      job.received = clock::now();
      job.generate = type == MsgType::generate;
      if (job.generate) {
        job.gen = std::move(std::get<msg::Generate>(m));
        if (!validate_tokens(job.gen.tokens, job.gen.start_pos, rid)) return true;
        if ((job.gen.flags & kGenerateSampling) != 0 && !validate_sampling(job.gen.ext, rid)) return true;
      } else {
        job.forward = std::move(std::get<msg::Forward>(m));
        if (!validate_tokens(job.forward.tokens, job.forward.start_pos, rid)) return true;
      }
      ctx_.counters().requests_total++;
      cancel_requested_ = false;
      job_ = std::move(job);
      state_ = State::generating;
      ctx_.admission().set_idle(holder_id_, false);
      job_event_.notify();
      return true;
    }
    case MsgType::reset: {
      if (state_ == State::generating) {
        send_error(errc::busy, "a request is already running on this session", false, rid);
        return true;
      }
      const auto p = std::get<msg::Reset>(m).position;
      if (p > static_cast<std::uint32_t>(seq_.position())) {
        send_error(errc::position_out_of_range,
                   "cannot reset to " + std::to_string(p) + ": the session holds " + std::to_string(seq_.position()) +
                       " positions",
                   false, rid);
        return true;
      }
      ctx_.admission().set_idle(holder_id_, false);  // the cache is ours while we change it
      seq_.rewind(static_cast<int>(p));
      ctx_.admission().set_idle(holder_id_, seq_.cached > 0);
      send(msg::Ok{p}, rid);
      return true;
    }
    case MsgType::cancel:
      if (state_ == State::generating) {
        cancel_requested_ = true;
        if (gen_ != nullptr) gen_->cancel(Generation::Reason::cancelled);
      }
      return true;
    case MsgType::ping:
      send(msg::Pong{std::get<msg::Ping>(m).nonce}, rid);
      return true;
    case MsgType::stats:
      send(msg::StatsReply{ctx_.stats_json()}, rid);
      return true;
    default:
      send_error(errc::bad_message, std::string(message_name(type)) + " is not a request", false, rid);
      return true;
  }
}

asio::awaitable<void> Session::generator() {
  for (;;) {
    // A peer that half-closed after its request still gets the whole reply (as for FORWARD
    // and PING); then the session ends.
    while (!job_ && !closing_ && !reader_done_) co_await job_event_.wait();
    if (closing_ || !job_) break;
    Request job = std::move(*job_);
    job_.reset();
    ctx_.counters().generating++;
    struct Guard {
      ServerCounters& c;
      ~Guard() { c.generating--; }
    } guard{ctx_.counters()};
    co_await run_request(job);
    state_ = State::ready;
    ctx_.admission().set_idle(holder_id_, seq_.cached > 0);
    last_activity_ = clock::now();
    if (ctx_.draining() && !closing_) {
      send_error(errc::shutting_down, "server shutting down", true, 0);
      close_read();
    }
  }
  job_.reset();
  if (state_ == State::generating) state_ = State::ready;
  generator_done_ = true;
  outbox_event_.notify();
}

Generation::Params Session::params_for(const Request& job, std::shared_ptr<grammar::CompiledGrammar> grammar) const {
  Generation::Params p;
  const auto& tokens = job.generate ? job.gen.tokens : job.forward.tokens;
  p.prompt.assign(tokens.begin(), tokens.end());
  p.start = static_cast<int>(job.generate ? job.gen.start_pos : job.forward.start_pos);
  p.holder = holder_id_;
  p.tenant = tenant_;
  p.received = job.received;
  if (job.generate) {
    const auto& g = job.gen;
    const int context = ctx_.context();
    p.limit_is_context = g.limit_pos > static_cast<std::uint32_t>(context);  // the context ends it, not the limit
    p.limit_pos = p.limit_is_context ? context : static_cast<int>(g.limit_pos);
    p.stop_on_eos = (g.flags & kGenerateStopOnEos) != 0;
    p.sampling = SamplingParams{g.temperature, g.topp, g.seed};
    if ((g.flags & kGenerateSampling) != 0) {
      const auto& x = g.ext;
      SamplingParams& s = *p.sampling;
      s.top_k = static_cast<int>(std::min<std::uint32_t>(x.top_k, 0x7FFFFFFF));
      s.min_p = x.min_p;
      s.repeat_penalty = x.repeat_penalty;
      s.repeat_last_n = x.repeat_last_n;
      s.presence_penalty = x.presence_penalty;
      s.frequency_penalty = x.frequency_penalty;
      for (const auto& [t, b] : x.logit_bias) s.logit_bias.emplace_back(static_cast<int>(t), b);
      p.logprobs = x.logprobs > 0 ? x.logprobs - 1 : -1;
      p.grammar = std::move(grammar);
    }
  }
  return p;
}

asio::awaitable<void> Session::run_request(const Request& job) {
  // A grammar is compiled (or found among the server's) off the network thread, with its
  // first mask; one that does not parse is refused, saying where.
  std::shared_ptr<grammar::CompiledGrammar> grammar;
  if (job.generate && (job.gen.flags & kGenerateSampling) != 0 && !job.gen.ext.grammar.empty()) {
    const std::string& text = job.gen.ext.grammar;
    grammar = co_await ctx_.off_network([&] {
      auto g = ctx_.grammar_for(text);
      if (g) g->mask(g->start());
      return g;
    });
    if (!grammar) {
      auto rules = grammar::parse(text);
      send_error(errc::bad_message, "grammar: " + (rules ? std::string("refused") : rules.error().message), false,
                 job.request_id);
      co_return;
    }
  }
  Generation gen(ctx_.generation_env(), seq_, params_for(job, std::move(grammar)));
  gen_ = &gen;
  gen.start(ex_);
  if (closing_) {
    gen.cancel(Generation::Reason::closed);
  } else if (cancel_requested_) {
    gen.cancel(Generation::Reason::cancelled);  // CANCEL came before it started
  }
  for (bool last = false; !last;) {
    const Generation::Event e = co_await gen.next();
    last = translate(job, e);
    // The writer drains; meanwhile the generation runs ahead by a bounded number of events.
    if (!last) co_await wait_outbox_room();
  }
  gen_ = nullptr;
}

bool Session::translate(const Request& job, const Generation::Event& e) {
  const auto rid = job.request_id;
  if (const auto* t = std::get_if<Generation::Token>(&e)) {
    if (t->logprobs) {
      msg::TokenLogprobs m{static_cast<std::uint32_t>(t->id), t->logprobs->logprob, {}};
      for (const auto& [id, v] : t->logprobs->top) m.top.emplace_back(static_cast<std::uint32_t>(id), v);
      send(std::move(m), rid);
    } else {
      send(msg::Token{static_cast<std::uint32_t>(t->id)}, rid);
    }
    ctx_.observe_latency(*t);
    ++tokens_generated_;
    ctx_.counters().generated_tokens_total++;
    return false;
  }
  if (const auto* l = std::get_if<Generation::Logits>(&e)) {
    send(msg::Logits{static_cast<std::uint32_t>(l->position), std::vector<float>(l->values.begin(), l->values.end())},
         rid);
    return false;
  }
  if (const auto* f = std::get_if<Generation::Failure>(&e)) {
    send_failure(*f, rid);
    return true;
  }
  const auto& end = std::get<Generation::End>(e);
  tokens_prompt_ += static_cast<std::uint64_t>(end.prompt_tokens);
  ctx_.counters().prompt_tokens_total += static_cast<std::uint64_t>(end.prompt_tokens);
  ctx_.count_prompt(end);
  if (closing_ || end.reason == Generation::Reason::closed) return true;  // nobody to tell
  if (!job.generate) {
    // FORWARD ends with its LOGITS; stopped while it waited for memory, it says why (a
    // forced shutdown closes the session instead).
    if (end.reason == Generation::Reason::cancelled) {
      send_error(errc::cancelled, "FORWARD cancelled while it waited for KV memory", false, rid);
    }
    return true;
  }
  msg::End m;
  m.reason = to_stop_reason(end.reason);
  m.prompt_tokens = static_cast<std::uint32_t>(end.prompt_tokens);
  m.generated_tokens = static_cast<std::uint32_t>(end.generated);
  m.position = static_cast<std::uint32_t>(end.position);
  m.last_token = static_cast<std::uint32_t>(end.last_token);
  send(m, rid);
  return true;
}

void Session::send_failure(const Generation::Failure& f, std::uint32_t rid) {
  const auto mib = [](std::uint64_t b) { return std::to_string((b + (1u << 20) - 1) >> 20); };
  switch (f.kind) {
    case Generation::Failure::Kind::never_fits:
      send_error(errc::busy,
                 "this request may grow to " + std::to_string(f.need) + " positions, " +
                     mib(KvCache::blocks_for(f.need) * seq_.kv.block_bytes()) + " MiB of KV memory: more than the whole " +
                     mib(ctx_.kv_budget().limit()) + " MiB of --kv-budget-mb",
                 false, rid);
      return;
    case Generation::Failure::Kind::timed_out:
      send_error(errc::busy,
                 "KV cache memory budget exhausted (" + mib(ctx_.kv_budget().used()) + " of " +
                     mib(ctx_.kv_budget().limit()) + " MiB in use, waited " +
                     std::to_string(duration_cast<milliseconds>(ctx_.options().queue_timeout).count()) + " ms)",
                 false, rid);
      return;
    case Generation::Failure::Kind::no_memory:
      send_error(errc::busy, "the server is out of memory for KV blocks", false, rid);
      return;
    case Generation::Failure::Kind::shutting_down:
      send_error(errc::shutting_down, "server shutting down", true, rid);
      close_read();
      return;
  }
}

asio::awaitable<void> Session::wait_outbox_room() {
  while (outbox_bytes_ > ctx_.options().max_outbox_bytes && !closing_) co_await drained_event_.wait();
}

asio::awaitable<void> Session::writer() {
  for (;;) {
    while (outbox_.empty() && !(reader_done_ && generator_done_)) co_await outbox_event_.wait();
    if (outbox_.empty()) break;
    auto frame = std::move(outbox_.front());
    outbox_.pop_front();
    outbox_bytes_ -= frame.size();
    write_started_ = clock::now();
    auto [ec, n] = co_await write_all(asio::buffer(frame));
    write_started_.reset();
    drained_event_.notify();
    if (ec) {
      // The peer is gone: stop reading and generating; drop what is queued.
      close_read();
      outbox_.clear();
      outbox_bytes_ = 0;
      while (!(reader_done_ && generator_done_)) co_await outbox_event_.wait();
      break;
    }
  }
  writer_done_ = true;
  watchdog_timer_.cancel();
}

asio::awaitable<void> Session::watchdog() {
  const auto& o = ctx_.options();
  const auto shortest = std::min({o.idle_timeout, o.handshake_timeout, o.write_timeout});
  const auto tick = std::clamp(shortest / 4, milliseconds(10), milliseconds(1000));
  while (!writer_done_) {
    watchdog_timer_.expires_after(tick);
    boost::system::error_code ec;
    co_await watchdog_timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (writer_done_) break;
    const auto now = clock::now();
    if (write_started_ && now - *write_started_ > o.write_timeout) {
      log::warn("session ", registry_id_, " peer=", peer_, " write timed out after ",
                duration_cast<milliseconds>(o.write_timeout).count(), " ms: closing");
      lowest().close(ec);  // cancels the stuck write and the read
      set_closing();
      continue;
    }
    if (closing_) continue;
    if (state_ == State::await_hello && now - opened_at_ > o.handshake_timeout) {
      send_error(errc::timed_out,
                 "no HELLO within " + std::to_string(duration_cast<milliseconds>(o.handshake_timeout).count()) + " ms",
                 true, 0);
      close_read();
    } else if (state_ == State::ready && now - last_activity_ > o.idle_timeout) {
      send_error(errc::timed_out,
                 "idle for " + std::to_string(duration_cast<milliseconds>(o.idle_timeout).count()) + " ms", true, 0);
      close_read();
    }
  }
}

}  // namespace llamawire

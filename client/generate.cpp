// The llamawire CLI's generate and chat modes.
#include "client/cli.hpp"

#include "client/connection.hpp"
#include "client/exit_codes.hpp"
#include "common/cli_support.hpp"
#include "common/grammar.hpp"
#include "common/sampler.hpp"
#include "common/tokenizer.hpp"

#include <chrono>
#include <cstdio>
#include <functional>
#include <iostream>
#include <optional>

namespace llamawire {

int exit_code_for(const Error& e) {
  if (e.code.category() == lw_category()) {
    switch (static_cast<errc>(e.code.value())) {
      case errc::busy:
      case errc::version_mismatch:
      case errc::unauthorized:
      case errc::shutting_down: return kExitRefused;
      case errc::context_full: return kExitContextFull;
      case errc::bad_tokenizer:
      case errc::bad_argument: return kExitError;
      default: return kExitConnection;
    }
  }
  return kExitConnection;
}

namespace {

using clock = std::chrono::steady_clock;

// llama2.c's printing rule (a lone unprintable byte is dropped) for its own vocabularies; a
// GGUF vocabulary's pieces print as they decode (a character split over byte tokens then
// arrives whole), as llama.cpp prints them.
void print_piece(const Tokenizer& tok, int prev, int next) {
  const auto decoded = tok.decode(prev, next);
  const auto piece = tok.kind() == VocabKind::llama2c ? printable_piece(decoded) : decoded;
  if (!piece.empty()) std::fwrite(piece.data(), 1, piece.size(), stdout);  // an empty view may hold no pointer
  std::fflush(stdout);
}

int fail(const std::string& what, const Error& e) {
  std::fflush(stdout);
  std::fprintf(stderr, "llamawire: %s: %s\n", what.c_str(), e.message.c_str());
  return exit_code_for(e);
}

std::vector<std::uint32_t> to_u32(const std::vector<int>& v) { return {v.begin(), v.end()}; }

// Tracks per-token timing for "achieved tok/s" (from the first generated token, as
// llama2.c times from its second position).
struct Timing {
  std::optional<clock::time_point> first;
  clock::time_point last;
  int tokens = 0;
  void tick() {
    last = clock::now();
    if (!first) first = last;
    ++tokens;
  }
  double rate() const {
    if (!first || tokens < 2) return 0.0;
    const double s = std::chrono::duration<double>(last - *first).count();
    return s > 0 ? (tokens - 1) / s : 0.0;
  }
};

// Traffic of the generation itself (after the handshake and tokenizer download).
struct Traffic {
  std::uint64_t sent = 0, received = 0, frames_sent = 0, frames_received = 0;
  static Traffic of(const Connection& c) {
    return {c.bytes_sent(), c.bytes_received(), c.frames_sent(), c.frames_received()};
  }
};

void print_stats(const Connection& c, const Traffic& setup, const Timing& t) {
  const Traffic now = Traffic::of(c);
  const double n = std::max(1, t.tokens);
  std::fprintf(stderr, "llamawire: setup (handshake, tokenizer): %llu bytes sent, %llu received\n",
               static_cast<unsigned long long>(setup.sent), static_cast<unsigned long long>(setup.received));
  std::fprintf(stderr,
               "llamawire: %d tokens: sent %llu bytes in %llu messages (%.1f bytes/token), received %llu bytes in "
               "%llu messages (%.1f bytes/token)\n",
               t.tokens, static_cast<unsigned long long>(now.sent - setup.sent),
               static_cast<unsigned long long>(now.frames_sent - setup.frames_sent),
               static_cast<double>(now.sent - setup.sent) / n,
               static_cast<unsigned long long>(now.received - setup.received),
               static_cast<unsigned long long>(now.frames_received - setup.frames_received),
               static_cast<double>(now.received - setup.received) / n);
  std::fprintf(stderr, "achieved tok/s: %f\n", t.rate());
}

// One assistant turn (or the whole generation): runs `feed` from `pos`, streams pieces,
// stops at limit/BOS (and EOS when stop_on_eos). Returns the END-like outcome.
struct TurnResult {
  StopReason reason = StopReason::steps;
  int position = 0;
  int last_token = 0;
};

asio::awaitable<Result<TurnResult>> run_turn(Connection& conn, const Tokenizer& tok, const CliOptions& o,
                                             const std::vector<int>& feed, int pos, int limit, bool stop_on_eos,
                                             Sampler& sampler, Timing& timing) {
  int prev = feed.back();
  if (!o.client_sampling) {
    msg::Generate g;
    g.start_pos = static_cast<std::uint32_t>(pos);
    g.limit_pos = static_cast<std::uint32_t>(limit);
    g.temperature = o.temperature;
    g.topp = o.topp;
    g.seed = sampler.rng_state();
    g.flags = stop_on_eos ? kGenerateStopOnEos : 0;
    g.tokens = to_u32(feed);
    if (o.top_k != 0 || o.min_p != 0.0f || o.repeat_penalty != 1.0f || !o.grammar.empty()) {
      g.flags |= kGenerateSampling;  // 1.5 (run_cli samples here with an older server)
      g.ext.top_k = static_cast<std::uint32_t>(o.top_k);
      g.ext.min_p = o.min_p;
      g.ext.repeat_penalty = o.repeat_penalty;
      g.ext.repeat_last_n = o.repeat_last_n;
      g.ext.grammar = o.grammar;
    }
    // Named, not a temporary in the co_await expression (g++ 12 coroutine temporaries).
    const std::function<bool(std::uint32_t)> on_token = [&](std::uint32_t t) {
      timing.tick();
      print_piece(tok, prev, static_cast<int>(t));
      prev = static_cast<int>(t);
      return true;
    };
    auto end = co_await conn.generate(std::move(g), on_token);
    if (!end) co_return end.error();
    co_return TurnResult{end->reason, static_cast<int>(end->position), static_cast<int>(end->last_token)};
  }
  // Client-side sampling: the server returns logits, we sample.
  auto feed_u32 = to_u32(feed);
  auto logits = co_await conn.forward(static_cast<std::uint32_t>(pos), std::move(feed_u32));
  if (!logits) co_return logits.error();
  pos += static_cast<int>(feed.size());
  sampler.remember(feed);
  for (;;) {
    const int next = sampler.sample(logits->values);
    if (const auto stop = tok.special().stop_for(next, stop_on_eos); stop != SpecialTokens::Stop::none) {
      co_return TurnResult{stop == SpecialTokens::Stop::bos ? StopReason::bos : StopReason::eos, pos, next};
    }
    timing.tick();
    print_piece(tok, prev, next);
    prev = next;
    // A grammar that is complete ends the turn, as an end token would.
    if (sampler.finished()) co_return TurnResult{StopReason::grammar, pos, next};
    if (pos >= limit) co_return TurnResult{StopReason::steps, pos, next};
    std::vector<std::uint32_t> one(1, static_cast<std::uint32_t>(next));
    logits = co_await conn.forward(static_cast<std::uint32_t>(pos), std::move(one));
    if (!logits) co_return logits.error();
    ++pos;
  }
}

bool read_line(const char* guide, std::string& out) {
  std::fputs(guide, stdout);
  std::fflush(stdout);
  if (!std::getline(std::cin, out)) return false;
  if (!out.empty() && out.back() == '\r') out.pop_back();
  return true;
}

}  // namespace

std::unique_ptr<asio::ssl::context> make_client_tls(const std::string& ca_file) {
  auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
  ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                   asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1);
  boost::system::error_code ec;
  if (ca_file.empty()) {
    ctx->set_default_verify_paths(ec);
  } else {
    ctx->load_verify_file(ca_file, ec);
  }
  if (ec) {
    std::fprintf(stderr, "llamawire: %s: cannot load CA certificates: %s\n",
                 ca_file.empty() ? "system store" : ca_file.c_str(), ec.message().c_str());
    return nullptr;
  }
  return ctx;
}

asio::awaitable<int> run_cli(CliOptions o) {
  Connection conn(co_await asio::this_coro::executor);
  std::unique_ptr<asio::ssl::context> tls;
  if (o.tls) {
    tls = make_client_tls(o.tls_ca);
    if (!tls) co_return kExitError;
    conn.use_tls(*tls);
  }
  auto connected = co_await conn.connect(o.host, o.port);
  if (!connected) {
    std::fprintf(stderr, "llamawire: server not reachable: %s\n", connected.error().message.c_str());
    co_return kExitUnreachable;
  }
  auto hello = co_await conn.hello(o.api_key, "llamawire-cli");
  if (!hello) co_return fail("server refused the connection", hello.error());
  const int vocab = static_cast<int>(hello->vocab_size);
  // GENERATE carries the samplers past llama2.c's and a grammar since 1.5: with an older
  // server this client samples them itself.
  if (hello->minor < 5 && (o.top_k != 0 || o.min_p != 0.0f || o.repeat_penalty != 1.0f || !o.grammar.empty())) {
    o.client_sampling = true;
  }
  auto model = co_await fetch_vocab(conn, *hello, o.tokenizer_path);
  if (!model) co_return fail("cannot get the tokenizer", model.error());
  if (!model->warning.empty()) std::fprintf(stderr, "llamawire: %s\n", model->warning.c_str());
  const Tokenizer* tok = &model->tok;
  // A GGUF vocabulary's text may name its special tokens ("</s>"), and its generations end at
  // EOS, as llama.cpp's CLI does; a llama2.c one runs on past EOS, as llama2.c does.
  const bool gguf_vocab = tok->kind() != VocabKind::llama2c;

  const int context = static_cast<int>(std::min(hello->seq_len, hello->context));
  const int steps = std::min(clamp_steps(o.steps, static_cast<int>(hello->seq_len)), context);
  // The sampler of each turn: llama2.c's, with the samplers and grammar given (client-side).
  std::shared_ptr<grammar::CompiledGrammar> gram;
  if (!o.grammar.empty()) {
    gram = std::make_shared<grammar::CompiledGrammar>(grammar::parse(o.grammar).value(),
                                                      std::make_shared<const grammar::TokenTrie>(*tok));
  }
  auto make_sampler = [&](std::uint64_t seed, bool stop_on_eos) {
    SamplingParams sp{o.temperature, o.topp, seed};
    sp.top_k = o.top_k;
    sp.min_p = o.min_p;
    sp.repeat_penalty = o.repeat_penalty;
    sp.repeat_last_n = o.repeat_last_n;
    Sampler s(vocab, std::move(sp));
    if (gram) {
      std::vector<int> ends;
      if (stop_on_eos) ends = {tok->eos_id()};
      if (stop_on_eos && tok->special().eot >= 0) ends.push_back(tok->special().eot);
      s.set_grammar(gram, std::move(ends));
    }
    return s;
  };
  Sampler sampler = make_sampler(resolve_seed(o.seed), o.chat || gguf_vocab);
  Timing timing;
  const Traffic setup = Traffic::of(conn);

  if (!o.chat) {
    const auto prompt = tok->encode(o.prompt, tok->add_bos(), false, gguf_vocab);
    const int n = static_cast<int>(prompt.size());
    // Forced prompt tokens print as llama2.c prints them while it runs the prompt.
    const int forced = std::min(n - 1, steps);
    for (int p = 0; p < forced; ++p) print_piece(*tok, prompt[static_cast<std::size_t>(p)], prompt[static_cast<std::size_t>(p) + 1]);
    if (n - 1 < steps) {
      auto r = co_await run_turn(conn, *tok, o, prompt, 0, steps, gguf_vocab, sampler, timing);
      if (!r) {
        std::fputs("\n", stdout);
        co_return fail("generation failed", r.error());
      }
      if (r->reason == StopReason::shutdown) {
        std::fputs("\n", stdout);
        co_return fail("generation stopped", make_error(errc::shutting_down, "server shutting down"));
      }
    }
    std::fputs("\n", stdout);
    std::fflush(stdout);
    print_stats(conn, setup, timing);
    conn.close();
    co_return kExitOk;
  }

  // Chat with the server's template (the model's own, or --chat-template there); the
  // conversation stays in the session's KV cache, so each turn sends only its new tokens:
  // the end token of the last reply (sampled, not yet cached), the template's text after a
  // reply, the user's turn and the reply prompt (see common/chat_template.hpp).
  const ChatTemplate tmpl(model->chat);
  std::string system_prompt = o.system_prompt;
  if (!o.system_prompt_given) {
    if (!read_line("Enter system prompt (optional): ", system_prompt)) system_prompt.clear();
  }
  int pos = 0;
  int pending = -1;  // last sampled token, not yet in the cache
  bool first = true;
  for (;;) {
    std::string user;
    if (first && !o.prompt.empty()) {
      user = o.prompt;
    } else if (!read_line("User: ", user)) {
      std::fputs("\n", stdout);
      break;  // EOF ends the conversation cleanly
    }
    ChatSegments segs = first ? tmpl.opening(system_prompt, tok->add_bos()) : tmpl.after_reply();
    const ChatSegments u = tmpl.user(user, first && tmpl.folds_system() ? std::string_view(system_prompt) : "");
    const ChatSegments reply = tmpl.reply_prefix();
    segs.insert(segs.end(), u.begin(), u.end());
    segs.insert(segs.end(), reply.begin(), reply.end());
    first = false;
    std::vector<int> feed;
    if (pending >= 0) feed.push_back(pending);
    const auto turn = encode_segments(*tok, segs);
    feed.insert(feed.end(), turn.begin(), turn.end());
    if (pos + static_cast<int>(feed.size()) >= steps) {
      std::fflush(stdout);
      std::fprintf(stderr, "llamawire: context full (%d of %d positions used): the conversation ends here\n", pos, steps);
      print_stats(conn, setup, timing);
      co_return kExitContextFull;
    }
    std::fputs("Assistant: ", stdout);
    std::fflush(stdout);
    auto r = co_await run_turn(conn, *tok, o, feed, pos, steps, true, sampler, timing);
    if (!r) {
      std::fputs("\n", stdout);
      co_return fail("chat failed", r.error());
    }
    std::fputs("\n", stdout);
    std::fflush(stdout);
    pos = r->position;
    pending = r->last_token;
    if (r->reason == StopReason::steps || r->reason == StopReason::context) {
      std::fprintf(stderr, "llamawire: context full (%d positions): the conversation ends here\n", pos);
      print_stats(conn, setup, timing);
      co_return kExitContextFull;
    }
    // Re-seed per turn so both sampling modes draw the same numbers turn after turn.
    sampler = make_sampler(resolve_seed(o.seed) + static_cast<std::uint64_t>(pos), true);
  }
  print_stats(conn, setup, timing);
  conn.close();
  co_return kExitOk;
}

}  // namespace llamawire

#include "common/messages.hpp"

#include "common/bytes.hpp"
#include "common/overloaded.hpp"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <optional>

namespace llamawire {
namespace {

void put_string(ByteWriter& w, std::string_view s) {
  const auto n = static_cast<std::uint16_t>(std::min<std::size_t>(s.size(), 0xFFFF));
  w.write(n);
  w.bytes(s.substr(0, n));
}

void put_pairs(ByteWriter& w, const std::vector<std::pair<std::uint32_t, float>>& pairs) {
  w.write(static_cast<std::uint32_t>(pairs.size()));
  for (const auto& [t, v] : pairs) {
    w.write(t);
    w.write(v);
  }
}

void put_tokens(ByteWriter& w, const std::vector<std::uint32_t>& tokens) {
  w.write(static_cast<std::uint32_t>(tokens.size()));
  for (auto t : tokens) w.write(t);
}

Error bad(MsgType t, const std::string& what) {
  return make_error(errc::bad_message, std::string(message_name(t)) + ": " + what);
}

// Field readers that turn "too short" into a bad_message naming the message type.
class Parser {
 public:
  Parser(MsgType t, std::span<const std::uint8_t> p) : type_(t), r_(p) {}

  template <class T>
  bool get(T& out) {
    const auto v = r_.read<T>();
    if (!v) return fail("payload too short");
    out = *v;
    return true;
  }
  // A length of type Len (u16: a string; u32: a text, 1.5's grammar) and that many bytes.
  template <class Len>
  bool get_sized(std::string& out, const char* what) {
    Len n = 0;
    if (!get(n)) return false;
    const auto b = r_.bytes(n);
    if (!b) return fail(std::string(what) + " length " + std::to_string(n) + " runs past the payload");
    out.assign(reinterpret_cast<const char*>(b->data()), b->size());
    return true;
  }
  bool get_string(std::string& out) { return get_sized<std::uint16_t>(out, "string"); }
  bool get_text(std::string& out) { return get_sized<std::uint32_t>(out, "text"); }
  // `last`: the tokens end the payload (else more fields follow them).
  bool get_tokens(std::vector<std::uint32_t>& out, bool last = true) {
    std::uint32_t n = 0;
    if (!get(n)) return false;
    // Checked against the bytes present before anything is allocated.
    if (last ? static_cast<std::uint64_t>(n) * 4 != r_.remaining() : static_cast<std::uint64_t>(n) * 4 > r_.remaining()) {
      return fail("n_tokens " + std::to_string(n) + " does not match the " + std::to_string(r_.remaining()) +
                  " bytes that follow");
    }
    out.resize(n);
    for (auto& t : out) get(t);
    return true;
  }
  // A u32 count and that many (u32 token, f32 value) pairs.
  bool get_pairs(std::vector<std::pair<std::uint32_t, float>>& out, const char* what) {
    std::uint32_t n = 0;
    if (!get(n)) return false;
    if (static_cast<std::uint64_t>(n) * 8 > r_.remaining()) {
      return fail(std::string(what) + " count " + std::to_string(n) + " runs past the payload");
    }
    out.resize(n);
    for (auto& [t, v] : out) {
      get(t);
      get(v);
    }
    return true;
  }
  bool done() {
    if (!r_.empty()) return fail(std::to_string(r_.remaining()) + " unexpected trailing bytes");
    return true;
  }
  bool fail(const std::string& what) {
    if (!error_) error_ = bad(type_, what);
    return false;
  }
  ByteReader& reader() { return r_; }
  const Error& error() const { return *error_; }

 private:
  MsgType type_;
  ByteReader r_;
  std::optional<Error> error_;
};

}  // namespace

std::string_view stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::steps: return "steps";
    case StopReason::bos: return "bos";
    case StopReason::eos: return "eos";
    case StopReason::context: return "context";
    case StopReason::cancelled: return "cancelled";
    case StopReason::shutdown: return "shutdown";
    case StopReason::grammar: return "grammar";
  }
  return "unknown";
}

MsgType message_type(const Message& m) {
  return std::visit(Overloaded{
                        [](const msg::Hello&) { return MsgType::hello; },
                        [](const msg::GetTokenizer&) { return MsgType::get_tokenizer; },
                        [](const msg::Forward&) { return MsgType::forward; },
                        [](const msg::Generate&) { return MsgType::generate; },
                        [](const msg::Reset&) { return MsgType::reset; },
                        [](const msg::Cancel&) { return MsgType::cancel; },
                        [](const msg::Ping&) { return MsgType::ping; },
                        [](const msg::Stats&) { return MsgType::stats; },
                        [](const msg::HelloOk&) { return MsgType::hello_ok; },
                        [](const msg::Tokenizer&) { return MsgType::tokenizer; },
                        [](const msg::Logits&) { return MsgType::logits; },
                        [](const msg::Token&) { return MsgType::token; },
                        [](const msg::End&) { return MsgType::end; },
                        [](const msg::Ok&) { return MsgType::ok; },
                        [](const msg::Pong&) { return MsgType::pong; },
                        [](const msg::StatsReply&) { return MsgType::stats_reply; },
                        [](const msg::Error&) { return MsgType::error; },
                        [](const msg::GetVocab&) { return MsgType::get_vocab; },
                        [](const msg::Vocab&) { return MsgType::vocab; },
                        [](const msg::TokenLogprobs&) { return MsgType::token_logprobs; },
                    },
                    m);
}

std::string_view message_name(MsgType t) {
  switch (t) {
    case MsgType::hello: return "HELLO";
    case MsgType::get_tokenizer: return "GET_TOKENIZER";
    case MsgType::forward: return "FORWARD";
    case MsgType::generate: return "GENERATE";
    case MsgType::reset: return "RESET";
    case MsgType::cancel: return "CANCEL";
    case MsgType::ping: return "PING";
    case MsgType::stats: return "STATS";
    case MsgType::get_vocab: return "GET_VOCAB";
    case MsgType::vocab: return "VOCAB";
    case MsgType::hello_ok: return "HELLO_OK";
    case MsgType::tokenizer: return "TOKENIZER";
    case MsgType::logits: return "LOGITS";
    case MsgType::token: return "TOKEN";
    case MsgType::token_logprobs: return "TOKEN_LOGPROBS";
    case MsgType::end: return "END";
    case MsgType::ok: return "OK";
    case MsgType::pong: return "PONG";
    case MsgType::stats_reply: return "STATS_REPLY";
    case MsgType::error: return "ERROR";
  }
  return "UNKNOWN";
}

bool is_known_type(std::uint8_t type) { return message_name(static_cast<MsgType>(type)) != "UNKNOWN"; }

// VOCAB: u8 kind, u32 n_tokens, i32 bos, eos, eot, unk, pad (-1: none), u8 flags
// (bit 0 add_bos, 1 add_eos, 2 add_space_prefix), string chat_template, then per token
// f32 score, u8 type, string piece; 1.3 trailer: u32 n_end, i32 ids, string pre, u32
// n_merges, strings.
// GENERATE's sampling extension (1.5), with its range checks. Token ids are checked by the
// server against its vocabulary, the grammar against the GBNF parser.
bool get_sampling_ext(Parser& p, msg::SamplingExt& x) {
  if (!(p.get(x.top_k) && p.get(x.min_p) && p.get(x.repeat_penalty) && p.get(x.repeat_last_n) &&
        p.get(x.presence_penalty) && p.get(x.frequency_penalty) && p.get_pairs(x.logit_bias, "n_bias") &&
        p.get_text(x.grammar) && p.get(x.logprobs))) {
    return false;
  }
  const auto in = [](float v, float lo, float hi) { return std::isfinite(v) && v >= lo && v <= hi; };
  if (!in(x.min_p, 0, 1)) return p.fail("min_p must be in [0, 1]");
  if (!in(x.repeat_penalty, 0, 10) || x.repeat_penalty == 0) return p.fail("repeat_penalty must be in (0, 10]");
  if (x.repeat_last_n < -1) return p.fail("repeat_last_n must be -1 or more");
  if (!in(x.presence_penalty, -2, 2)) return p.fail("presence_penalty must be in [-2, 2]");
  if (!in(x.frequency_penalty, -2, 2)) return p.fail("frequency_penalty must be in [-2, 2]");
  for (const auto& [t, b] : x.logit_bias) {
    if (!in(b, -100, 100)) return p.fail("logit_bias values must be in [-100, 100]");
  }
  if (x.logprobs > 21) return p.fail("logprobs must be at most 21 (20 alternatives)");
  return true;
}

void put_vocab(ByteWriter& w, const msg::Vocab& m) {
  const Vocab& v = m.vocab;
  w.write(static_cast<std::uint8_t>(v.kind));
  w.write(static_cast<std::uint32_t>(v.pieces.size()));
  for (const int id : {v.special.bos, v.special.eos, v.special.eot, v.special.unk, v.special.pad}) {
    w.write(static_cast<std::int32_t>(id));
  }
  w.write(static_cast<std::uint8_t>((v.add_bos ? 1 : 0) | (v.add_eos ? 2 : 0) | (v.add_space_prefix ? 4 : 0)));
  put_string(w, m.chat_template);
  for (std::size_t i = 0; i < v.pieces.size(); ++i) {
    w.write(i < v.scores.size() ? v.scores[i] : 0.0f);
    w.write(static_cast<std::uint8_t>(i < v.types.size() ? v.types[i] : TokenType::undefined));
    put_string(w, v.pieces[i]);
  }
  if (!m.extended) return;
  w.write(static_cast<std::uint32_t>(v.special.also_end.size()));
  for (const int id : v.special.also_end) w.write(static_cast<std::int32_t>(id));
  put_string(w, v.pre);
  w.write(static_cast<std::uint32_t>(v.merges.size()));
  for (const auto& mg : v.merges) put_string(w, mg);
}

bool get_vocab(Parser& p, msg::Vocab& m) {
  Vocab& v = m.vocab;
  std::uint8_t kind = 0, flags = 0;
  std::uint32_t n = 0;
  std::int32_t ids[5] = {};
  if (!p.get(kind) || !p.get(n)) return false;
  for (auto& id : ids) {
    if (!p.get(id)) return false;
  }
  if (!p.get(flags) || !p.get_string(m.chat_template)) return false;
  if (kind > 2) return p.fail("unknown vocabulary kind " + std::to_string(kind));
  if ((flags & ~7u) != 0) return p.fail("unknown flag bits");
  // Each token takes at least 7 bytes: a count the payload cannot hold is refused first.
  if (static_cast<std::uint64_t>(n) * 7 > p.reader().remaining()) {
    return p.fail("n_tokens " + std::to_string(n) + " is more than the payload holds");
  }
  for (const std::int32_t id : ids) {
    if (id < -1 || id >= static_cast<std::int64_t>(n)) return p.fail("special token id " + std::to_string(id) + " out of range");
  }
  v.kind = static_cast<VocabKind>(kind);
  v.special = SpecialTokens{ids[0], ids[1], ids[2], ids[3], ids[4]};
  v.add_bos = (flags & 1) != 0;
  v.add_eos = (flags & 2) != 0;
  v.add_space_prefix = (flags & 4) != 0;
  v.pieces.resize(n);
  v.scores.resize(n);
  v.types.resize(n);
  for (std::uint32_t i = 0; i < n; ++i) {
    std::uint8_t type = 0;
    if (!p.get(v.scores[i]) || !p.get(type) || !p.get_string(v.pieces[i])) return false;
    if (type > 6) return p.fail("token " + std::to_string(i) + " has an unknown type " + std::to_string(type));
    if (!std::isfinite(v.scores[i])) return p.fail("token " + std::to_string(i) + " has a non-finite score");
    v.types[i] = static_cast<TokenType>(type);
  }
  m.extended = !p.reader().empty();
  if (!m.extended) {
    if (v.kind == VocabKind::bpe) return p.fail("a BPE vocabulary without its merges (the 1.3 trailer)");
    return true;
  }
  std::uint32_t n_end = 0, n_merges = 0;
  if (!p.get(n_end)) return false;
  if (static_cast<std::uint64_t>(n_end) * 4 > p.reader().remaining()) {
    return p.fail("n_end " + std::to_string(n_end) + " is more than the payload holds");
  }
  for (std::uint32_t i = 0; i < n_end; ++i) {
    std::int32_t id = 0;
    if (!p.get(id)) return false;
    if (id < 0 || id >= static_cast<std::int64_t>(n)) {
      return p.fail("end token id " + std::to_string(id) + " out of range");
    }
    v.special.also_end.push_back(id);
  }
  if (!p.get_string(v.pre) || !p.get(n_merges)) return false;
  // Each merge takes at least 2 bytes.
  if (static_cast<std::uint64_t>(n_merges) * 2 > p.reader().remaining()) {
    return p.fail("n_merges " + std::to_string(n_merges) + " is more than the payload holds");
  }
  v.merges.resize(n_merges);
  for (auto& mg : v.merges) {
    if (!p.get_string(mg)) return false;
  }
  return true;
}

std::vector<std::uint8_t> encode_payload(const Message& m) {
  ByteWriter w;
  std::visit(Overloaded{
                 [&](const msg::Hello& h) {
                   w.write(h.major);
                   w.write(h.minor);
                   put_string(w, h.api_key);
                   put_string(w, h.client_name);
                 },
                 [&](const msg::GetTokenizer&) {},
                 [&](const msg::Forward& f) {
                   w.write(f.start_pos);
                   put_tokens(w, f.tokens);
                 },
                 [&](const msg::Generate& g) {
                   w.write(g.start_pos);
                   w.write(g.limit_pos);
                   w.write(g.temperature);
                   w.write(g.topp);
                   w.write(g.seed);
                   w.write(g.flags);
                   put_tokens(w, g.tokens);
                   if ((g.flags & kGenerateSampling) == 0) return;
                   const auto& x = g.ext;
                   w.write(x.top_k);
                   w.write(x.min_p);
                   w.write(x.repeat_penalty);
                   w.write(x.repeat_last_n);
                   w.write(x.presence_penalty);
                   w.write(x.frequency_penalty);
                   put_pairs(w, x.logit_bias);
                   w.write(static_cast<std::uint32_t>(x.grammar.size()));
                   w.bytes(x.grammar);
                   w.write(x.logprobs);
                 },
                 [&](const msg::Reset& r) { w.write(r.position); },
                 [&](const msg::Cancel&) {},
                 [&](const msg::Ping& p) { w.write(p.nonce); },
                 [&](const msg::Stats&) {},
                 [&](const msg::HelloOk& h) {
                   w.write(h.major);
                   w.write(h.minor);
                   for (auto v : {h.dim, h.hidden_dim, h.n_layers, h.n_heads, h.n_kv_heads, h.vocab_size, h.seq_len,
                                  h.context, h.max_frame_bytes, h.tokenizer_bytes}) {
                     w.write(v);
                   }
                   w.write(h.weights);
                   put_string(w, h.model_name);
                 },
                 [&](const msg::Tokenizer& t) { w.bytes(t.bytes); },
                 [&](const msg::Logits& l) {
                   w.write(l.pos);
                   w.write(static_cast<std::uint32_t>(l.values.size()));
                   auto& buf = w.buffer();
                   const std::size_t at = buf.size();
                   buf.resize(at + l.values.size() * 4);
                   if (!l.values.empty()) std::memcpy(buf.data() + at, l.values.data(), l.values.size() * 4);
                 },
                 [&](const msg::Token& t) { w.write(t.token); },
                 [&](const msg::TokenLogprobs& t) {
                   w.write(t.token);
                   w.write(t.logprob);
                   w.write(static_cast<std::uint8_t>(t.top.size()));
                   for (const auto& [id, v] : t.top) {
                     w.write(id);
                     w.write(v);
                   }
                 },
                 [&](const msg::End& e) {
                   w.write(static_cast<std::uint8_t>(e.reason));
                   w.write(e.prompt_tokens);
                   w.write(e.generated_tokens);
                   w.write(e.position);
                   w.write(e.last_token);
                 },
                 [&](const msg::Ok& o) { w.write(o.position); },
                 [&](const msg::Pong& p) { w.write(p.nonce); },
                 [&](const msg::StatsReply& s) { w.bytes(s.json); },
                 [&](const msg::Error& e) {
                   w.write(e.code);
                   w.write(e.fatal);
                   put_string(w, e.message);
                 },
                 [&](const msg::GetVocab&) {},
                 [&](const msg::Vocab& v) { put_vocab(w, v); },
             },
             m);
  return w.take();
}

std::vector<std::uint8_t> encode_frame(const Message& m, std::uint32_t request_id) {
  const auto payload = encode_payload(m);
  std::vector<std::uint8_t> out(kFrameHeaderBytes + payload.size());
  encode_header(std::span<std::uint8_t, kFrameHeaderBytes>(out.data(), kFrameHeaderBytes),
                FrameHeader{static_cast<std::uint8_t>(message_type(m)), request_id,
                            static_cast<std::uint32_t>(payload.size())});
  if (!payload.empty()) std::memcpy(out.data() + kFrameHeaderBytes, payload.data(), payload.size());
  return out;
}

std::vector<std::uint8_t> encode_error_frame(errc e, std::string_view message, bool fatal, std::uint32_t request_id) {
  return encode_frame(msg::Error{to_wire(e), static_cast<std::uint8_t>(fatal ? 1 : 0), std::string(message)},
                      request_id);
}

Result<Message> decode_payload(std::uint8_t type_byte, std::span<const std::uint8_t> payload) {
  if (!is_known_type(type_byte)) {
    return make_error(errc::unknown_message, "unknown message type 0x" + [&] {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%02x", static_cast<unsigned>(type_byte));
      return std::string(buf);
    }());
  }
  const auto type = static_cast<MsgType>(type_byte);
  Parser p(type, payload);
  Message out;
  bool ok = true;
  switch (type) {
    case MsgType::hello: {
      msg::Hello h;
      ok = p.get(h.major) && p.get(h.minor) && p.get_string(h.api_key) && p.get_string(h.client_name);
      out = std::move(h);
      break;
    }
    case MsgType::get_tokenizer: out = msg::GetTokenizer{}; break;
    case MsgType::forward: {
      msg::Forward f;
      ok = p.get(f.start_pos) && p.get_tokens(f.tokens);
      if (ok && f.tokens.empty()) ok = p.fail("n_tokens must be at least 1");
      out = std::move(f);
      break;
    }
    case MsgType::generate: {
      msg::Generate g;
      ok = p.get(g.start_pos) && p.get(g.limit_pos) && p.get(g.temperature) && p.get(g.topp) && p.get(g.seed) &&
           p.get(g.flags);
      const bool ext = ok && (g.flags & kGenerateSampling) != 0;
      ok = ok && p.get_tokens(g.tokens, !ext);
      if (ok && ext) ok = get_sampling_ext(p, g.ext);
      if (ok && g.tokens.empty()) ok = p.fail("n_tokens must be at least 1");
      if (ok && (!std::isfinite(g.temperature) || g.temperature < 0.0f)) ok = p.fail("temperature must be >= 0");
      if (ok && !std::isfinite(g.topp)) ok = p.fail("topp must be finite");
      if (ok && g.seed == 0) ok = p.fail("seed must not be 0");
      if (ok && (g.flags & ~(kGenerateStopOnEos | kGenerateSampling)) != 0) ok = p.fail("unknown flag bits");
      out = std::move(g);
      break;
    }
    case MsgType::reset: {
      msg::Reset r;
      ok = p.get(r.position);
      out = r;
      break;
    }
    case MsgType::cancel: out = msg::Cancel{}; break;
    case MsgType::ping: {
      msg::Ping q;
      ok = p.get(q.nonce);
      out = q;
      break;
    }
    case MsgType::stats: out = msg::Stats{}; break;
    case MsgType::get_vocab: out = msg::GetVocab{}; break;
    case MsgType::vocab: {
      msg::Vocab v;
      ok = get_vocab(p, v);
      out = std::move(v);
      break;
    }
    case MsgType::hello_ok: {
      msg::HelloOk h;
      ok = p.get(h.major) && p.get(h.minor) && p.get(h.dim) && p.get(h.hidden_dim) && p.get(h.n_layers) &&
           p.get(h.n_heads) && p.get(h.n_kv_heads) && p.get(h.vocab_size) && p.get(h.seq_len) && p.get(h.context) &&
           p.get(h.max_frame_bytes) && p.get(h.tokenizer_bytes) && p.get(h.weights) && p.get_string(h.model_name);
      out = std::move(h);
      break;
    }
    case MsgType::tokenizer: {
      out = msg::Tokenizer{std::vector<std::uint8_t>(payload.begin(), payload.end())};
      return out;
    }
    case MsgType::logits: {
      msg::Logits l;
      std::uint32_t n = 0;
      ok = p.get(l.pos) && p.get(n);
      if (ok && static_cast<std::uint64_t>(n) * 4 != p.reader().remaining()) {
        ok = p.fail("n " + std::to_string(n) + " does not match the bytes that follow");
      }
      if (ok && n > 0) {
        l.values.resize(n);
        const auto b = p.reader().bytes(static_cast<std::size_t>(n) * 4);
        std::memcpy(l.values.data(), b->data(), b->size());
      }
      out = std::move(l);
      break;
    }
    case MsgType::token: {
      msg::Token t;
      ok = p.get(t.token);
      out = t;
      break;
    }
    case MsgType::token_logprobs: {
      msg::TokenLogprobs t;
      std::uint8_t n = 0;
      ok = p.get(t.token) && p.get(t.logprob) && p.get(n);
      if (ok && static_cast<std::size_t>(n) * 8 != p.reader().remaining()) {
        ok = p.fail("n " + std::to_string(n) + " does not match the bytes that follow");
      }
      for (int i = 0; ok && i < n; ++i) {
        std::pair<std::uint32_t, float> e;
        p.get(e.first);
        p.get(e.second);
        t.top.push_back(e);
      }
      out = std::move(t);
      break;
    }
    case MsgType::end: {
      msg::End e;
      std::uint8_t reason = 0;
      ok = p.get(reason) && p.get(e.prompt_tokens) && p.get(e.generated_tokens) && p.get(e.position) &&
           p.get(e.last_token);
      if (ok && reason > static_cast<std::uint8_t>(StopReason::grammar)) ok = p.fail("unknown stop reason");
      e.reason = static_cast<StopReason>(reason);
      out = e;
      break;
    }
    case MsgType::ok: {
      msg::Ok o;
      ok = p.get(o.position);
      out = o;
      break;
    }
    case MsgType::pong: {
      msg::Pong q;
      ok = p.get(q.nonce);
      out = q;
      break;
    }
    case MsgType::stats_reply: {
      out = msg::StatsReply{std::string(payload.begin(), payload.end())};
      return out;
    }
    case MsgType::error: {
      msg::Error e;
      ok = p.get(e.code) && p.get(e.fatal) && p.get_string(e.message);
      out = std::move(e);
      break;
    }
  }
  // HELLO and HELLO_OK may grow in later minor versions: bytes past the fields this
  // version knows are ignored there (so a newer peer is not locked out), and refused in
  // every other message (whose new forms go only to peers that announced they know them).
  const bool extensible = type == MsgType::hello || type == MsgType::hello_ok;
  if (ok && !extensible) ok = p.done();
  if (!ok) return p.error();
  return out;
}

}  // namespace llamawire

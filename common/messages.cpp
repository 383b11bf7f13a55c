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
  bool get_string(std::string& out) {
    std::uint16_t n = 0;
    if (!get(n)) return false;
    const auto b = r_.bytes(n);
    if (!b) return fail("string length " + std::to_string(n) + " runs past the payload");
    out.assign(reinterpret_cast<const char*>(b->data()), b->size());
    return true;
  }
  bool get_tokens(std::vector<std::uint32_t>& out) {
    std::uint32_t n = 0;
    if (!get(n)) return false;
    // Checked against the bytes present before anything is allocated.
    if (static_cast<std::uint64_t>(n) * 4 != r_.remaining()) {
      return fail("n_tokens " + std::to_string(n) + " does not match the " + std::to_string(r_.remaining()) +
                  " bytes that follow");
    }
    out.resize(n);
    for (auto& t : out) get(t);
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
    case MsgType::hello_ok: return "HELLO_OK";
    case MsgType::tokenizer: return "TOKENIZER";
    case MsgType::logits: return "LOGITS";
    case MsgType::token: return "TOKEN";
    case MsgType::end: return "END";
    case MsgType::ok: return "OK";
    case MsgType::pong: return "PONG";
    case MsgType::stats_reply: return "STATS_REPLY";
    case MsgType::error: return "ERROR";
  }
  return "UNKNOWN";
}

bool is_known_type(std::uint8_t type) { return message_name(static_cast<MsgType>(type)) != "UNKNOWN"; }

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
           p.get(g.flags) && p.get_tokens(g.tokens);
      if (ok && g.tokens.empty()) ok = p.fail("n_tokens must be at least 1");
      if (ok && (!std::isfinite(g.temperature) || g.temperature < 0.0f)) ok = p.fail("temperature must be >= 0");
      if (ok && !std::isfinite(g.topp)) ok = p.fail("topp must be finite");
      if (ok && g.seed == 0) ok = p.fail("seed must not be 0");
      if (ok && (g.flags & ~kGenerateStopOnEos) != 0) ok = p.fail("unknown flag bits");
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
    case MsgType::end: {
      msg::End e;
      std::uint8_t reason = 0;
      ok = p.get(reason) && p.get(e.prompt_tokens) && p.get(e.generated_tokens) && p.get(e.position) &&
           p.get(e.last_token);
      if (ok && reason > static_cast<std::uint8_t>(StopReason::shutdown)) ok = p.fail("unknown stop reason");
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
  if (ok) ok = p.done();
  if (!ok) return p.error();
  return out;
}

}  // namespace llamawire

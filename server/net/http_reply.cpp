#include "server/net/http_reply.hpp"

#include "common/utf8.hpp"

namespace llamawire {

namespace json = boost::json;

json::object ReplyMeta::envelope(json::array choices, bool chunk) const {
  return json::object{{"id", id},
                      {"object", chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion"},
                      {"created", created},
                      {"model", model},
                      {"choices", std::move(choices)}};
}

std::string sse_event(const json::value& v) { return "data: " + json::serialize(v) + "\n\n"; }

std::string base64_encode(std::span<const std::byte> bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (std::size_t i = 0; i < bytes.size(); i += 3) {
    std::uint32_t v = std::to_integer<std::uint32_t>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) v |= std::to_integer<std::uint32_t>(bytes[i + 1]) << 8;
    if (i + 2 < bytes.size()) v |= std::to_integer<std::uint32_t>(bytes[i + 2]);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < bytes.size() ? kAlphabet[(v >> 6) & 63] : '=';
    out += i + 2 < bytes.size() ? kAlphabet[v & 63] : '=';
  }
  return out;
}

std::string LogprobsOut::piece(int prev, int id) const {
  return std::string(tok_.kind() != VocabKind::llama2c ? tok_.decode(prev, id) : printable_piece(tok_.decode(prev, id)));
}

json::object LogprobsOut::entry(int prev, int id, float logprob) const {
  const std::string p = piece(prev, id);
  json::array bytes;
  for (const char c : p) bytes.push_back(static_cast<unsigned char>(c));
  return json::object{{"token", utf8::sanitize(p)}, {"logprob", logprob}, {"bytes", std::move(bytes)}};
}

void LogprobsOut::add(int prev, const TokenLogprobs& lp, std::size_t offset) {
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

json::value LogprobsOut::take() {
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

ChoiceOutput::ChoiceOutput(int index, const GenRequest& r, const Tokenizer& tok, int prev, std::string call_id_prefix)
    : index_(index), r_(r), tok_(tok), prev_(prev) {
  for (const auto& s : r.stop) holdback_ = std::max(holdback_, s.size() - 1);
  if (r.logprobs >= 0) logprobs_.emplace(r.chat, tok);
  if (r.tools.active()) tools_.emplace(r.tools, std::move(call_id_prefix));
}

bool ChoiceOutput::add(int token, const TokenLogprobs* logprobs) {
  if (stopped_) return true;
  ++tokens_;
  if (logprobs_ && logprobs != nullptr) {
    logprobs_->add(prev_, *logprobs, (r_.echo ? r_.prompt_text.size() : 0) + text_.size());
  }
  // llama2.c's models print as llama2.c does (lone unprintable bytes dropped); a GGUF
  // vocabulary's byte tokens build characters (the text is sanitized as it goes out).
  text_ += tok_.kind() != VocabKind::llama2c ? tok_.decode(prev_, token) : printable_piece(tok_.decode(prev_, token));
  prev_ = token;
  for (const auto& s : r_.stop) {
    const auto at = text_.find(s, sent_ > s.size() ? sent_ - s.size() : 0);
    if (at != std::string::npos) {
      text_.resize(at);
      stopped_ = true;
    }
  }
  return stopped_;
}

json::value ChoiceOutput::take_logprobs() {
  return logprobs_ && !logprobs_->empty() ? logprobs_->take() : json::value(nullptr);
}

json::object ChoiceOutput::choice(json::object delta_or_text, const char* finish) {
  json::object c{{"index", index_}};
  if (r_.chat) {
    c["delta"] = std::move(delta_or_text);
  } else {
    c["text"] = delta_or_text.contains("text") ? delta_or_text.at("text") : json::value("");
  }
  c["logprobs"] = take_logprobs();
  c["finish_reason"] = finish ? json::value(finish) : json::value(nullptr);
  return c;
}

std::string ChoiceOutput::head(const ReplyMeta& m) const {
  json::object c{{"index", index_}, {"logprobs", nullptr}, {"finish_reason", nullptr}};
  if (r_.chat) {
    c["delta"] = json::object{{"role", "assistant"}, {"content", ""}};
  } else if (r_.echo) {
    c["text"] = utf8::sanitize(r_.prompt_text);
  } else {
    return {};
  }
  return sse_event(m.envelope(json::array{c}, true));
}

std::string ChoiceOutput::stream(const ReplyMeta& m, bool final) {
  const std::size_t safe =
      final || stopped_ ? text_.size()
                        : utf8::boundary_at_or_before(text_, text_.size() > holdback_ ? text_.size() - holdback_ : 0);
  if (safe <= sent_ && !final) return {};
  std::string piece;
  std::vector<ToolCall> calls;
  if (tools_) {
    auto u = tools_->scan(std::string_view(text_).substr(0, safe), final);
    piece = std::move(u.content);
    calls = std::move(u.calls);
  } else if (safe > sent_) {
    piece = text_.substr(sent_, safe - sent_);
  }
  sent_ = std::max(sent_, safe);
  std::string out;
  if (!piece.empty()) {
    json::object d;
    d[r_.chat ? "content" : "text"] = utf8::sanitize(piece);
    out += sse_event(m.envelope(json::array{choice(std::move(d), nullptr)}, true));
  }
  for (const auto& c : calls) {
    // One chunk per call, whole: its id, name and all its arguments.
    json::object call{{"index", static_cast<int>(calls_.size())},
                      {"id", c.id},
                      {"type", "function"},
                      {"function", json::object{{"name", c.name}, {"arguments", c.arguments}}}};
    calls_.push_back(call);
    out += sse_event(m.envelope(json::array{choice(json::object{{"tool_calls", json::array{call}}}, nullptr)}, true));
  }
  return out;
}

std::string ChoiceOutput::finish_event(const ReplyMeta& m, const char* finish, const json::value* usage) {
  auto o = m.envelope(json::array{choice(json::object{}, finish_reason(finish))}, true);
  if (usage != nullptr) o["usage"] = *usage;
  return sse_event(o);
}

const char* ChoiceOutput::finish_reason(const char* finish) const {
  return !calls_.empty() && std::string_view(finish) == "stop" ? "tool_calls" : finish;
}

json::object ChoiceOutput::whole(const char* finish) {
  json::object c{{"index", index_}};
  if (tools_) {
    auto u = tools_->scan(text_, true);
    for (auto& call : u.calls) {
      calls_.push_back(json::object{{"id", std::move(call.id)},
                                    {"type", "function"},
                                    {"function", json::object{{"name", std::move(call.name)},
                                                              {"arguments", std::move(call.arguments)}}}});
    }
    content_ += u.content;
  }
  if (r_.chat) {
    json::object msg{{"role", "assistant"}};
    if (tools_) {
      msg["content"] = content_.empty() && !calls_.empty() ? json::value(nullptr) : json::value(utf8::sanitize(content_));
      if (!calls_.empty()) msg["tool_calls"] = calls_;
    } else {
      msg["content"] = utf8::sanitize(text_);
    }
    c["message"] = std::move(msg);
  } else {
    c["text"] = utf8::sanitize(r_.echo ? r_.prompt_text + text_ : text_);
  }
  c["logprobs"] = take_logprobs();
  c["finish_reason"] = finish_reason(finish);
  return c;
}

}  // namespace llamawire

#include "common/chat_template.hpp"

#include <array>
#include <utility>

namespace llamawire {
namespace {

constexpr std::array<std::pair<ChatFormat, std::string_view>, 6> kNames{{{ChatFormat::llama2, "llama2"},
                                                                         {ChatFormat::mistral, "mistral"},
                                                                         {ChatFormat::zephyr, "zephyr"},
                                                                         {ChatFormat::chatml, "chatml"},
                                                                         {ChatFormat::vicuna, "vicuna"},
                                                                         {ChatFormat::llama3, "llama3"}}};

constexpr std::string_view kImStart = "<|im_start|>";
constexpr std::string_view kImEnd = "<|im_end|>";
constexpr std::string_view kStartHeader = "<|start_header_id|>";
constexpr std::string_view kEndHeader = "<|end_header_id|>";
constexpr std::string_view kEotId = "<|eot_id|>";

// Jinja's `trim`, as Llama-3's template applies it to every message.
std::string trimmed(std::string_view s) {
  constexpr std::string_view ws = " \t\n\r\v\f";
  const std::size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  return std::string(s.substr(b, s.find_last_not_of(ws) - b + 1));
}

ChatSegment text(std::string s) { return {ChatSegment::Kind::text, std::move(s)}; }
ChatSegment special(std::string_view s) { return {ChatSegment::Kind::special, std::string(s)}; }
ChatSegment bos() { return {ChatSegment::Kind::bos, {}}; }
ChatSegment eos() { return {ChatSegment::Kind::eos, {}}; }

// Llama-3: <|start_header_id|>role<|end_header_id|>\n\n, then (for a message) its trimmed
// content and <|eot_id|>.
ChatSegments llama3_header(std::string_view role) {
  return {special(kStartHeader), text(std::string(role)), special(kEndHeader), text("\n\n")};
}
ChatSegments llama3_message(std::string_view role, std::string_view content) {
  ChatSegments s = llama3_header(role);
  s.back().text += trimmed(content);
  s.push_back(special(kEotId));
  return s;
}

void append(ChatSegments& to, const ChatSegments& from) { to.insert(to.end(), from.begin(), from.end()); }

}  // namespace

std::string_view chat_format_name(ChatFormat f) {
  for (const auto& [k, n] : kNames) {
    if (k == f) return n;
  }
  return "?";
}

std::optional<ChatFormat> chat_format_by_name(std::string_view name) {
  for (const auto& [k, n] : kNames) {
    if (n == name) return k;
  }
  return std::nullopt;
}

std::string chat_format_list() {
  std::string s;
  for (const auto& [k, n] : kNames) s += (s.empty() ? "" : ", ") + std::string(n);
  return s;
}

std::optional<ChatFormat> detect_chat_format(std::string_view j) {
  auto has = [&](std::string_view s) { return j.find(s) != std::string_view::npos; };
  if (has(kStartHeader) && has(kEotId)) return ChatFormat::llama3;
  if (has(kImStart)) return ChatFormat::chatml;
  if (has("<|user|>") || has("<|assistant|>")) return ChatFormat::zephyr;
  if (has("[INST]")) return has("<<SYS>>") ? ChatFormat::llama2 : ChatFormat::mistral;
  if (has("USER:") && has("ASSISTANT:")) return ChatFormat::vicuna;
  return std::nullopt;
}

ChatChoice choose_chat_format(const Vocab& vocab, std::string_view override_name) {
  ChatChoice c;
  if (!override_name.empty()) {
    c.format = chat_format_by_name(override_name).value_or(kDefaultChatFormat);
    c.note = "chat template " + std::string(override_name) + " (--chat-template)";
    return c;
  }
  if (vocab.chat_template.empty()) {
    c.note = "chat template " + std::string(chat_format_name(c.format)) + " (the model names none: the default)";
    return c;
  }
  if (const auto f = detect_chat_format(vocab.chat_template)) {
    c.format = *f;
    c.note = "chat template " + std::string(chat_format_name(*f)) + " (recognised in tokenizer.chat_template)";
    return c;
  }
  c.warn = true;
  c.note = "tokenizer.chat_template is none of " + chat_format_list() + ": using the default, " +
           std::string(chat_format_name(c.format)) + " (--chat-template NAME overrides)";
  return c;
}

ChatSegments ChatTemplate::opening(std::string_view system, bool add_bos) const {
  ChatSegments s;
  if (f_ != ChatFormat::llama2 && add_bos) s.push_back(bos());
  if (system.empty() || folds_system()) return s;
  switch (f_) {
    case ChatFormat::zephyr:
      s.push_back(text("<|system|>\n" + std::string(system)));
      s.push_back(eos());
      s.push_back(text("\n"));
      break;
    case ChatFormat::chatml:
      s.push_back(special(kImStart));
      s.push_back(text("system\n" + std::string(system)));
      s.push_back(special(kImEnd));
      s.push_back(text("\n"));
      break;
    case ChatFormat::vicuna: s.push_back(text(std::string(system) + "\n\n")); break;
    case ChatFormat::llama3: append(s, llama3_message("system", system)); break;
    default: break;
  }
  return s;
}

ChatSegments ChatTemplate::user(std::string_view content, std::string_view system) const {
  const std::string c(content);
  switch (f_) {
    case ChatFormat::llama2: {
      const std::string sys = system.empty() ? "" : "<<SYS>>\n" + std::string(system) + "\n<</SYS>>\n\n";
      return {bos(), text("[INST] " + sys + c + " [/INST]")};
    }
    case ChatFormat::mistral: {
      const std::string sys = system.empty() ? "" : std::string(system) + "\n\n";
      return {text("[INST] " + sys + c + " [/INST]")};
    }
    case ChatFormat::zephyr: return {text("<|user|>\n" + c), eos(), text("\n")};
    case ChatFormat::chatml: return {special(kImStart), text("user\n" + c), special(kImEnd), text("\n")};
    case ChatFormat::vicuna: return {text("USER: " + c + "\n")};
    case ChatFormat::llama3: return llama3_message("user", c);
  }
  return {};
}

ChatSegments ChatTemplate::reply_prefix() const {
  switch (f_) {
    case ChatFormat::zephyr: return {text("<|assistant|>\n")};
    case ChatFormat::chatml: return {special(kImStart), text("assistant\n")};
    case ChatFormat::vicuna: return {text("ASSISTANT:")};
    case ChatFormat::llama3: return llama3_header("assistant");
    default: return {};
  }
}

ChatSegments ChatTemplate::after_reply() const {
  switch (f_) {
    case ChatFormat::zephyr:
    case ChatFormat::chatml:
    case ChatFormat::vicuna: return {text("\n")};
    default: return {};
  }
}

std::string_view ChatTemplate::end_of_turn() const {
  return f_ == ChatFormat::chatml ? kImEnd : f_ == ChatFormat::llama3 ? kEotId : std::string_view{};
}

ChatSegments ChatTemplate::render(std::span<const ChatMessage> messages, bool add_bos) const {
  ChatSegments s = opening({}, add_bos);
  std::string pending_system;  // for the formats that fold it into the next user message
  for (const ChatMessage& m : messages) {
    if (m.role == "system") {
      if (folds_system()) {
        pending_system = pending_system.empty() ? m.content : pending_system + "\n" + m.content;
      } else {
        ChatSegments sys = opening(m.content, false);
        append(s, sys);
      }
    } else if (m.role == "user") {
      append(s, user(m.content, pending_system));
      pending_system.clear();
    } else if (m.role == "assistant") {
      append(s, reply_prefix());
      s.push_back(text(f_ == ChatFormat::llama3 ? trimmed(m.content) : m.content));
      s.push_back(end_of_turn().empty() ? eos() : special(end_of_turn()));
      append(s, after_reply());
    }
  }
  append(s, reply_prefix());
  return s;
}

std::vector<int> encode_segments(const Tokenizer& tok, const ChatSegments& segments) {
  std::vector<int> out;
  std::string run;
  auto flush = [&] {
    if (run.empty()) return;
    const auto ids = tok.encode(run, false, false, false);
    out.insert(out.end(), ids.begin(), ids.end());
    run.clear();
  };
  for (const ChatSegment& s : segments) {
    switch (s.kind) {
      case ChatSegment::Kind::text: run += s.text; break;
      case ChatSegment::Kind::bos:
        flush();
        if (tok.bos_id() >= 0) out.push_back(tok.bos_id());
        break;
      case ChatSegment::Kind::eos:
        flush();
        if (tok.eos_id() >= 0) out.push_back(tok.eos_id());
        break;
      case ChatSegment::Kind::special: {
        const int id = tok.find(s.text);
        const TokenType ty = tok.type(id);
        if (id >= 0 && (ty == TokenType::control || ty == TokenType::user_defined)) {
          flush();
          out.push_back(id);
        } else {
          run += s.text;  // the vocabulary has no such token: it is text
        }
        break;
      }
    }
  }
  flush();
  return out;
}

int end_of_turn_id(const Tokenizer& tok, const ChatTemplate& t) {
  if (t.end_of_turn().empty()) return -1;
  const int id = tok.find(t.end_of_turn());
  const TokenType ty = tok.type(id);
  return id >= 0 && (ty == TokenType::control || ty == TokenType::user_defined) ? id : -1;
}

}  // namespace llamawire

// Chat templates: how a conversation becomes the prompt a chat model was trained on. The
// formats are written out here (not interpreted from Jinja); a GGUF file's
// tokenizer.chat_template only selects one. Both the CLI's chat mode and the HTTP chat
// endpoint render with this, so one conversation gives the same tokens either way.
//
// A rendering is a list of segments: text, BOS, EOS, or a special token written by name
// (<|im_start|>). Runs of text are tokenized whole, as llama.cpp tokenizes a rendered
// prompt; BOS/EOS and specials become their ids, so user text that happens to spell "</s>"
// stays text. Each template is compositional: the rendering of a conversation is the
// concatenation of its messages' renderings, so a client that keeps the conversation in
// its session sends only each turn's new segments and the tokens are the same.
#pragma once

#include "common/tokenizer.hpp"

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace llamawire {

enum class ChatFormat { llama2, mistral, zephyr, chatml, vicuna, llama3 };

inline constexpr ChatFormat kDefaultChatFormat = ChatFormat::llama2;

std::string_view chat_format_name(ChatFormat f);
std::optional<ChatFormat> chat_format_by_name(std::string_view name);
// The format a Jinja chat template (tokenizer.chat_template) writes, recognised by its
// markers; nullopt when it is none of the known ones.
std::optional<ChatFormat> detect_chat_format(std::string_view jinja);
// "llama2, mistral, zephyr, chatml, vicuna, llama3"
std::string chat_format_list();

struct ChatSegment {
  enum class Kind { text, bos, eos, special } kind = Kind::text;
  std::string text;  // text, or the special token's text
};
using ChatSegments = std::vector<ChatSegment>;

struct ChatMessage {
  std::string role;  // system, user, assistant
  std::string content;
};

class ChatTemplate {
 public:
  explicit ChatTemplate(ChatFormat f) : f_(f) {}
  ChatFormat format() const { return f_; }
  std::string_view name() const { return chat_format_name(f_); }

  // The whole conversation followed by the reply prompt. Roles are system, user and
  // assistant; the caller has checked them. `add_bos`: the vocabulary's add_bos_token
  // (Llama-2's template writes its own BOS per turn whatever it says).
  ChatSegments render(std::span<const ChatMessage> messages, bool add_bos) const;

  // Incremental pieces of the same rendering, for a client that keeps the conversation:
  // the first turn is opening(system) + user(text, system) + reply_prefix(); after a reply
  // that ended with its end token (which the session has not cached yet), the next turn is
  // [that token] + after_reply() + user(text, "") + reply_prefix().
  ChatSegments opening(std::string_view system, bool add_bos) const;
  // `system`: a system prompt the format folds into this user message (llama2, mistral).
  ChatSegments user(std::string_view content, std::string_view system) const;
  ChatSegments reply_prefix() const;
  // What follows a reply after its end token (e.g. zephyr's "\n").
  ChatSegments after_reply() const;
  // The special token that ends a reply when it is not EOS ("<|im_end|>", "<|eot_id|>"),
  // else empty.
  std::string_view end_of_turn() const;
  bool folds_system() const { return f_ == ChatFormat::llama2 || f_ == ChatFormat::mistral; }

 private:
  ChatFormat f_;
};

// The template for a vocabulary: `override_name` when given (it must be a known name), else
// the format its tokenizer.chat_template writes, else the default (llama2). `note` receives
// what was decided when it is worth a log line (an unrecognised template is a warning).
struct ChatChoice {
  ChatFormat format = kDefaultChatFormat;
  std::string note;
  bool warn = false;
};
ChatChoice choose_chat_format(const Vocab& vocab, std::string_view override_name);

// Token ids of the segments (each text run encoded whole, without special parsing).
std::vector<int> encode_segments(const Tokenizer& tok, const ChatSegments& segments);
// The end-of-turn id of this template with this vocabulary: its special token if the
// vocabulary has it, else -1 (EOS ends the turn).
int end_of_turn_id(const Tokenizer& tok, const ChatTemplate& t);

}  // namespace llamawire

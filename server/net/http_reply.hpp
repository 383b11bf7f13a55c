// What a generation request's choices produce, written in the OpenAI formats: the text of
// each choice (stop strings applied, never cut inside a UTF-8 character), its
// log-probabilities and its tool calls, as server-sent-event chunks while it streams or as
// the choice object of a whole reply. No I/O: HttpConnection writes what this builds.
#pragma once

#include "common/sampler.hpp"
#include "common/tokenizer.hpp"
#include "server/net/http_request.hpp"
#include "server/net/tool_calls.hpp"

#include <boost/json.hpp>

#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace llamawire {

// The fields every chunk and reply of one request shares.
struct ReplyMeta {
  std::string id;
  std::int64_t created = 0;
  std::string model;
  bool chat = false;

  // {"id", "object", "created", "model", "choices"}
  boost::json::object envelope(boost::json::array choices, bool chunk) const;
};

// "data: JSON\n\n"
std::string sse_event(const boost::json::value& v);

// Standard base64 (RFC 4648, with padding): an embedding's floats when encoding_format is
// "base64".
std::string base64_encode(std::span<const std::byte> bytes);

// A generation's log-probabilities in the API's two formats: chat's
// {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]} and completions'
// {"tokens", "token_logprobs", "top_logprobs": [{text: logprob}], "text_offset"}. Entries
// gather until take(), which a streamed chunk calls for the tokens since the last one.
class LogprobsOut {
 public:
  LogprobsOut(bool chat, const Tokenizer& tok) : chat_(chat), tok_(tok) {}
  // `prev`: the token before (text is decoded after it); `offset`: where its text begins.
  void add(int prev, const TokenLogprobs& lp, std::size_t offset);
  bool empty() const { return n_ == 0; }
  boost::json::value take();

 private:
  std::string piece(int prev, int id) const;
  boost::json::object entry(int prev, int id, float logprob) const;

  bool chat_;
  const Tokenizer& tok_;
  boost::json::array content_, tokens_, token_logprobs_, top_, offsets_;
  int n_ = 0;
};

// One choice's output as it grows.
class ChoiceOutput {
 public:
  // `prev`: the token before the first generated one (the prompt's last).
  ChoiceOutput(int index, const GenRequest& r, const Tokenizer& tok, int prev, std::string call_id_prefix);

  // Adds a drawn token; true when a stop string has ended the output (later tokens are
  // not added).
  bool add(int token, const TokenLogprobs* logprobs);
  bool stopped() const { return stopped_; }
  int tokens() const { return tokens_; }

  // The stream's first event for this choice: chat's role, completions' echoed prompt;
  // empty when there is none.
  std::string head(const ReplyMeta& m) const;
  // The events for what may go out now: held back is what may still become a stop string
  // or a tool call, and a character not yet complete. `final`: all of it.
  std::string stream(const ReplyMeta& m, bool final);
  // The last event: the finish reason (and the usage, when given).
  std::string finish_event(const ReplyMeta& m, const char* finish, const boost::json::value* usage);
  // The choice object of a whole reply.
  boost::json::object whole(const char* finish);
  // "tool_calls" when the output called tools and ended by itself, else `finish`.
  const char* finish_reason(const char* finish) const;

 private:
  boost::json::object choice(boost::json::object delta_or_text, const char* finish);
  boost::json::value take_logprobs();

  int index_;
  const GenRequest& r_;
  const Tokenizer& tok_;
  int prev_;
  std::string text_;     // generated so far (after stop handling), raw bytes
  std::size_t sent_ = 0; // bytes of text_ already streamed (or scanned for tool calls)
  std::size_t holdback_ = 0;
  bool stopped_ = false;
  int tokens_ = 0;
  std::optional<LogprobsOut> logprobs_;
  std::optional<ToolCallScanner> tools_;
  std::string content_;  // with tools: the content scanned so far (whole replies)
  boost::json::array calls_;  // with tools: the calls found so far
};

}  // namespace llamawire

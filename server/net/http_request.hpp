// Parsing and validation of the HTTP API's generation requests (completions and chat):
// JSON in, a validated GenRequest or an OpenAI-style error out. No I/O: the fuzz target
// and the unit tests call it directly.
#pragma once

#include "common/chat_template.hpp"
#include "common/sampler.hpp"
#include "common/tokenizer.hpp"
#include "server/net/tool_calls.hpp"

#include <boost/beast/http/status.hpp>

#include <variant>

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace llamawire {

struct HttpError {
  boost::beast::http::status status;
  std::string message;
  std::string type = "invalid_request_error";
  std::string code;
};

// {"error": {"message", "type", "param", "code"}}
std::string error_body(const HttpError& e);

// What a generation request asks for, parsed and validated.
struct GenRequest {
  bool chat = false;
  std::vector<int> prompt;
  int max_tokens = 16;
  bool max_tokens_given = false;
  // temperature, top_p (0 is greedy: temperature 0), seed, and the other samplers
  SamplingParams sampling{1.0f, 1.0f, 0};
  std::vector<std::string> stop;
  bool stream = false;
  // The output's language (GBNF): from "grammar", or response_format json_object /
  // json_schema; empty: none. Checked to parse.
  std::string grammar;
  bool include_usage = false;  // stream_options.include_usage: a last chunk with the usage
  // Each token's log-probability with this many alternatives (-1: none): completions'
  // "logprobs": N, chat's "logprobs": true with "top_logprobs": N.
  int logprobs = -1;
  bool echo = false;  // completions: the prompt's text before the output
  std::string prompt_text;  // completions: the prompt as sent (for echo)
  int n = 1;  // choices: generations of the same prompt (each its own sampler seed)
  ToolSpec tools;  // chat: the functions offered and tool_choice (active(): in play)
};

// The tokenizer endpoints (llama.cpp's): POST /tokenize {"content", "add_special",
// "with_pieces"} -> {"tokens": [id...]} (or [{"id", "piece"}...]); POST /detokenize
// {"tokens": [id...]} -> {"content"}. JSON text in, JSON text out.
std::variant<std::string, HttpError> tokenize_request(std::string_view body, const Tokenizer& tok);
std::variant<std::string, HttpError> detokenize_request(std::string_view body, const Tokenizer& tok);

// POST /v1/embeddings: {"input": a string, an array of strings, an array of token ids or
// an array of such arrays, "model", "encoding_format": "float" | "base64", "user"}; each
// input is encoded as a completion's prompt (with BOS when the vocabulary adds it) and must
// fit the context.
struct EmbedRequest {
  std::vector<std::vector<int>> inputs;
  bool base64 = false;
};
std::variant<EmbedRequest, HttpError> parse_embedding_request(std::string_view body, const Tokenizer& tok, int context);

// The request fields the API knows, and what becomes of each: the OpenAI API's fields and
// llama.cpp's extensions are implemented or refused (400 unsupported_parameter, naming the
// field); any other field is ignored, as the OpenAI API ignores fields it does not define.
enum class FieldStatus { implemented, no_effect, unsupported };
// nullptr when the field is not one the API defines.
const FieldStatus* field_status(bool chat, std::string_view field);

// Parses a /v1/completions (chat = false) or /v1/chat/completions body; `context` bounds
// max_tokens and the prompt's length.
std::variant<GenRequest, HttpError> parse_generation_request(bool chat, std::string_view body, const Tokenizer& tok,
                                                             const ChatTemplate& tmpl, int context);

}  // namespace llamawire

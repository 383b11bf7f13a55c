// Parsing and validation of the HTTP API's generation requests (completions and chat):
// JSON in, a validated GenRequest or an OpenAI-style error out. No I/O: the fuzz target
// and the unit tests call it directly.
#pragma once

#include "common/chat_template.hpp"
#include "common/tokenizer.hpp"

#include <boost/beast/http/status.hpp>

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
  float temperature = 1.0f;
  float top_p = 1.0f;
  std::uint64_t seed = 0;
  std::vector<std::string> stop;
  bool stream = false;
};

// Parses a /v1/completions (chat = false) or /v1/chat/completions body; `context` bounds
// max_tokens and the prompt's length.
std::variant<GenRequest, HttpError> parse_generation_request(bool chat, std::string_view body, const Tokenizer& tok,
                                                             const ChatTemplate& tmpl, int context);

}  // namespace llamawire

// Tool (function) calling for the chat API, built on the chat templates and the grammar
// engine rather than on each model family's own tool syntax. One convention for every
// template:
//
//  - The tools are described in the system prompt (tools_prompt): one JSON line per
//    function, and how to call one.
//  - A call is written as
//        <tool_call>
//        {"name": "NAME", "arguments": {...}}
//        </tool_call>
//    several calls one after another, separated by a newline. With tool_choice "required"
//    or a named function the output is constrained to calls (tools_grammar, each
//    function's arguments by its "parameters" schema); with "auto" to either calls or
//    plain text that does not begin with "<"; with "none" the tools are not offered.
//  - The reply is scanned (ToolCallScanner): text outside the blocks is content, each
//    block that parses as a call of an offered function is a tool call.
//  - In the history, an assistant message's tool_calls are rendered back in the same
//    form (tool_call_text), and a run of "tool" messages as one user turn of
//    <tool_response> blocks (tool_response_text), which every template can carry.
#pragma once

#include "common/chat_template.hpp"
#include "common/error.hpp"

#include <boost/json/value.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace llamawire {

struct ToolFunction {
  std::string name;
  std::string description;
  boost::json::value parameters;  // a JSON Schema for the arguments (an object)
};

struct ToolSpec {
  enum class Choice { none, automatic, required, named };
  std::vector<ToolFunction> functions;
  Choice choice = Choice::none;
  std::string named;      // Choice::named: the function
  bool parallel = true;   // parallel_tool_calls: more than one call in a reply
  bool active() const { return choice != Choice::none && !functions.empty(); }
};

struct ToolCall {
  std::string id;
  std::string name;
  std::string arguments;  // JSON text
};

// The text added to the system prompt to offer the tools.
std::string tools_prompt(const ToolSpec& spec);
// The grammar (GBNF) the reply must follow, or the error of a "parameters" schema that
// json_schema cannot take.
Result<std::string> tools_grammar(const ToolSpec& spec);
// A call as the model writes it (and as it is rendered back into the history).
std::string tool_call_text(std::string_view name, std::string_view arguments);

// A tool's result as it is rendered in a user turn.
std::string tool_response_text(std::string_view content);

inline constexpr std::string_view kToolCallOpen = "<tool_call>";
inline constexpr std::string_view kToolCallClose = "</tool_call>";

// Splits a reply into content and tool calls as it grows.
class ToolCallScanner {
 public:
  // `id_prefix`: calls get ids id_prefix + "_" + their index in the reply.
  ToolCallScanner(const ToolSpec& spec, std::string id_prefix) : spec_(spec), id_prefix_(std::move(id_prefix)) {}

  struct Update {
    std::string content;          // content text that may go out now
    std::vector<ToolCall> calls;  // calls completed since the last scan
  };
  // `text`: the whole reply so far (each call passes a longer one); `final`: nothing more
  // comes. Text that may still become a call's opening tag is held back until it is known.
  Update scan(std::string_view text, bool final);
  int calls() const { return n_calls_; }

 private:
  // The call in a block's text, if it is one of an offered function.
  std::optional<ToolCall> parse_block(std::string_view block);

  const ToolSpec& spec_;
  std::string id_prefix_;
  std::size_t pos_ = 0;     // text before this is done with
  std::string held_ws_;     // whitespace after a call: dropped if another call follows
  int n_calls_ = 0;
};

}  // namespace llamawire

#include "server/net/tool_calls.hpp"

#include "common/json_schema.hpp"

#include <boost/json.hpp>

namespace llamawire {

namespace json = boost::json;

namespace {

std::string_view trim(std::string_view s) {
  constexpr std::string_view ws = " \t\n\r";
  const auto b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

// The longest suffix of `text` that is a proper prefix of `tag`.
std::size_t partial_tag(std::string_view text, std::string_view tag) {
  for (std::size_t n = std::min(text.size(), tag.size() - 1); n > 0; --n) {
    if (text.substr(text.size() - n) == tag.substr(0, n)) return n;
  }
  return 0;
}

std::string call_head(std::string_view name) {
  return std::string(kToolCallOpen) + "\n{\"name\": " + json::serialize(json::value(json::string(name))) +
         ", \"arguments\": ";
}
constexpr std::string_view kCallTail = "}\n</tool_call>";

}  // namespace

std::string tool_call_text(std::string_view name, std::string_view arguments) {
  return call_head(name) + std::string(arguments) + std::string(kCallTail);
}

std::string tool_response_text(std::string_view content) {
  return "<tool_response>\n" + std::string(content) + "\n</tool_response>";
}

std::string tools_prompt(const ToolSpec& spec) {
  std::string s =
      "You have functions (tools) you may call. Each line below describes one as JSON: its name, what it does, "
      "and a JSON Schema of its arguments.\n";
  for (const auto& f : spec.functions) {
    json::object o{{"name", f.name}};
    if (!f.description.empty()) o["description"] = f.description;
    o["parameters"] = f.parameters;
    s += json::serialize(o) + "\n";
  }
  s += "To call a function, write a block like this, with the arguments as a JSON object:\n" +
       tool_call_text("NAME", "{...}") + "\n";
  if (spec.parallel) s += "Write one block per call when you need more than one.\n";
  switch (spec.choice) {
    case ToolSpec::Choice::required: s += "Answer with function calls only."; break;
    case ToolSpec::Choice::named: s += "Answer by calling the function " + spec.named + "."; break;
    default: s += "If no function helps, answer in plain text."; break;
  }
  return s;
}

Result<std::string> tools_grammar(const ToolSpec& spec) {
  if (!spec.active()) return std::string();
  std::string rules;
  std::string alternatives;
  int i = 0;
  for (const auto& f : spec.functions) {
    if (spec.choice == ToolSpec::Choice::named && f.name != spec.named) continue;
    const std::string rule = "tool" + std::to_string(i++) + "-args";
    auto args = json_schema_rules(f.parameters, rule);
    if (!args) {
      return Error{args.error().code, "tools: function '" + f.name + "' parameters: " + args.error().message};
    }
    rules += *args;
    alternatives += (alternatives.empty() ? "" : " | ") + gbnf_literal(call_head(f.name)) + " " + rule;
  }
  std::string g = "call ::= (" + alternatives + ") " + gbnf_literal(kCallTail) + "\n";
  g += spec.parallel ? "calls ::= call (\"\\n\" call)*\n" : "calls ::= call\n";
  if (spec.choice == ToolSpec::Choice::automatic) {
    // Plain text, or calls: a reply that begins with "<" is a call.
    g += "root ::= calls | plain\nplain ::= ([^<] .*)?\n";
  } else {
    g += "root ::= calls\n";
  }
  return g + rules + json_primitives_gbnf();
}

std::optional<ToolCall> ToolCallScanner::parse_block(std::string_view block) {
  const std::string_view body = trim(block);
  boost::system::error_code ec;
  const json::value v = json::parse(body, ec);
  if (ec || !v.is_object()) return std::nullopt;
  const auto& o = v.as_object();
  const auto* name = o.if_contains("name");
  const auto* args = o.if_contains("arguments");
  if (name == nullptr || !name->is_string() || args == nullptr) return std::nullopt;
  bool offered = false;
  for (const auto& f : spec_.functions) offered = offered || f.name == name->as_string();
  if (!offered) return std::nullopt;
  ToolCall c;
  c.name = std::string(name->as_string());
  // The arguments as the model wrote them when the block has the form it was asked for,
  // so that the history renders back to the same text; else as JSON.
  const std::string head = call_head(c.name).substr(kToolCallOpen.size() + 1);
  if (body.substr(0, head.size()) == head && body.back() == '}') {
    c.arguments = std::string(trim(body.substr(head.size(), body.size() - head.size() - 1)));
  } else if (args->is_string()) {
    c.arguments = std::string(args->as_string());
  } else {
    c.arguments = json::serialize(*args);
  }
  c.id = id_prefix_ + "_" + std::to_string(n_calls_++);
  return c;
}

ToolCallScanner::Update ToolCallScanner::scan(std::string_view text, bool final) {
  Update u;
  // Whitespace is held until text follows it; before or between calls it is dropped.
  auto content = [&](std::string_view s) {
    const auto last = s.find_last_not_of(" \t\n\r");
    if (last == std::string_view::npos) {
      held_ws_ += s;
      return;
    }
    u.content += held_ws_;
    u.content += s.substr(0, last + 1);
    held_ws_ = std::string(s.substr(last + 1));
  };
  while (pos_ < text.size()) {
    const std::string_view rest = text.substr(pos_);
    const auto open = rest.find(kToolCallOpen);
    if (open == std::string_view::npos) {
      // No call begins here: content, but for what may be the start of one.
      const std::size_t keep = final ? 0 : partial_tag(rest, kToolCallOpen);
      content(rest.substr(0, rest.size() - keep));
      pos_ += rest.size() - keep;
      break;
    }
    const auto close = rest.find(kToolCallClose, open + kToolCallOpen.size());
    if (close == std::string_view::npos && !final) {
      content(rest.substr(0, open));
      pos_ += open;
      break;  // the block is not complete yet
    }
    const std::size_t end = close == std::string_view::npos ? rest.size() : close + kToolCallClose.size();
    std::optional<ToolCall> call;
    if (close != std::string_view::npos) {
      call = parse_block(rest.substr(open + kToolCallOpen.size(), close - open - kToolCallOpen.size()));
    }
    if (call) {
      content(rest.substr(0, open));
      held_ws_.clear();
      u.calls.push_back(std::move(*call));
    } else {
      content(rest.substr(0, end));  // not a call: it stays text
    }
    pos_ += end;
  }
  if (final) {
    if (n_calls_ == 0 && text.find(kToolCallOpen) == std::string_view::npos) u.content += held_ws_;
    held_ws_.clear();
  }
  return u;
}

}  // namespace llamawire

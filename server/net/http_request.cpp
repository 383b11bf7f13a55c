#include "server/net/http_request.hpp"

#include "common/grammar.hpp"
#include "common/json_schema.hpp"
#include "common/utf8.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>

namespace llamawire {

namespace http = boost::beast::http;
namespace json = boost::json;

std::string error_body(const HttpError& e) {
  json::object err{{"message", e.message}, {"type", e.type}, {"param", nullptr}};
  err["code"] = e.code.empty() ? json::value(nullptr) : json::value(e.code);
  return json::serialize(json::object{{"error", err}});
}


namespace {

// A bound as a person writes it: 128, 0.5, 1e+06.
std::string number_text(double v) {
  char buf[32];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else {
    std::snprintf(buf, sizeof buf, "%g", v);
  }
  return buf;
}

HttpError bad(std::string message) { return HttpError{http::status::bad_request, std::move(message)}; }
HttpError unsupported(const std::string& what) {
  return HttpError{http::status::bad_request, what + " is not supported by this server", "invalid_request_error",
                   "unsupported_parameter"};
}

// Field readers: a present field of the wrong type is a 400 naming the field.
std::optional<HttpError> read_number(const json::object& o, const char* key, double lo, double hi, double& out) {
  const auto* v = o.if_contains(key);
  if (v == nullptr || v->is_null()) return std::nullopt;
  if (!v->is_number()) return bad(std::string("'") + key + "' must be a number");
  out = v->to_number<double>();
  if (!(out >= lo && out <= hi)) {
    return bad(std::string("'") + key + "' must be in [" + number_text(lo) + ", " + number_text(hi) + "] (got " +
               number_text(out) + ")");
  }
  return std::nullopt;
}

std::optional<HttpError> read_float(const json::object& o, const char* key, double lo, double hi, float& out) {
  double v = out;
  if (auto e = read_number(o, key, lo, hi, v)) return e;
  out = static_cast<float>(v);
  return std::nullopt;
}

std::optional<HttpError> read_int(const json::object& o, const char* key, double lo, double hi, int& out) {
  double v = out;
  if (auto e = read_number(o, key, lo, hi, v)) return e;
  if (v != std::floor(v)) return bad(std::string("'") + key + "' must be an integer");
  out = static_cast<int>(v);
  return std::nullopt;
}

struct Field {
  std::string_view name;
  FieldStatus status;
  int where;  // 0 both, 1 completions only, 2 chat only
};
constexpr FieldStatus kImpl = FieldStatus::implemented;
constexpr FieldStatus kNone = FieldStatus::no_effect;
constexpr FieldStatus kNo = FieldStatus::unsupported;
// The OpenAI API's fields for /v1/completions and /v1/chat/completions, and llama.cpp's
// server extensions; README "HTTP API" lists them with their status.
constexpr Field kFields[] = {
    {"model", kImpl, 0},          {"prompt", kImpl, 1},           {"messages", kImpl, 2},
    {"max_tokens", kImpl, 0},     {"max_completion_tokens", kImpl, 2}, {"temperature", kImpl, 0},
    {"top_p", kImpl, 0},          {"seed", kImpl, 0},             {"stop", kImpl, 0},
    {"stream", kImpl, 0},         {"n", kImpl, 0},                {"top_k", kImpl, 0},
    {"min_p", kImpl, 0},          {"presence_penalty", kImpl, 0}, {"frequency_penalty", kImpl, 0},
    {"repeat_penalty", kImpl, 0}, {"repeat_last_n", kImpl, 0},    {"logit_bias", kImpl, 0},
    {"response_format", kImpl, 0}, {"grammar", kImpl, 0},        {"json_schema", kImpl, 0},
    {"user", kNone, 0},           {"stream_options", kImpl, 0},   {"logprobs", kImpl, 0},
    {"top_logprobs", kImpl, 2},
    {"echo", kImpl, 1},           {"suffix", kNo, 1},             {"best_of", kNo, 1},
    {"tools", kImpl, 2},          {"tool_choice", kImpl, 2},      {"parallel_tool_calls", kImpl, 2},
    {"functions", kNo, 2},        {"function_call", kNo, 2},
    {"modalities", kNo, 2},       {"audio", kNo, 2},              {"prediction", kNo, 2},
    {"reasoning_effort", kNo, 2}, {"web_search_options", kNo, 2}, {"store", kNo, 2},
    {"metadata", kNo, 2},         {"service_tier", kNo, 2}};

// Whether a value asks for something (null, false, 0, "", [], {} and "none" do not).
bool asks_for(const json::value& v) {
  if (v.is_null()) return false;
  if (v.is_bool()) return v.as_bool();
  if (v.is_number()) return v.to_number<double>() != 0;
  if (v.is_string()) return !v.as_string().empty() && v.as_string() != "none";
  if (v.is_array()) return !v.as_array().empty();
  return !v.as_object().empty();
}

std::optional<HttpError> refuse_unsupported(const json::object& o, bool chat) {
  for (const auto& [k, v] : o) {
    const FieldStatus* st = field_status(chat, k);
    if (st != nullptr && *st == FieldStatus::unsupported && asks_for(v)) return unsupported("'" + std::string(k) + "'");
  }
  return std::nullopt;
}

// response_format, grammar and json_schema: the output's language, as GBNF.
std::optional<HttpError> parse_format(const json::object& o, GenRequest& r) {
  int given = 0;
  if (const auto* g = o.if_contains("grammar"); g != nullptr && !g->is_null()) {
    if (!g->is_string()) return bad("'grammar' must be a string (GBNF)");
    r.grammar = std::string(g->as_string());
    ++given;
  }
  auto from_schema = [&](const json::value& schema, const char* where) -> std::optional<HttpError> {
    auto gbnf = json_schema_to_gbnf(schema);
    if (!gbnf) return bad(std::string(where) + ": " + gbnf.error().message);
    r.grammar = std::move(*gbnf);
    return std::nullopt;
  };
  if (const auto* s = o.if_contains("json_schema"); s != nullptr && !s->is_null()) {
    if (auto e = from_schema(*s, "'json_schema'")) return e;
    ++given;
  }
  if (const auto* f = o.if_contains("response_format"); f != nullptr && !f->is_null()) {
    if (!f->is_object() || !f->as_object().contains("type") || !f->as_object().at("type").is_string()) {
      return bad("'response_format' must be an object with a 'type'");
    }
    const auto& fo = f->as_object();
    const std::string_view type = fo.at("type").as_string();
    if (type == "json_object") {
      // llama.cpp's form {"type": "json_object", "schema": {...}} too.
      if (const auto* sch = fo.if_contains("schema"); sch != nullptr && !sch->is_null()) {
        if (auto e = from_schema(*sch, "'response_format.schema'")) return e;
      } else {
        r.grammar = json_object_gbnf();
      }
      ++given;
    } else if (type == "json_schema") {
      const auto* js = fo.if_contains("json_schema");
      if (js == nullptr || !js->is_object()) return bad("'response_format.json_schema' must be an object");
      const auto* sch = js->as_object().if_contains("schema");
      if (auto e = from_schema(sch != nullptr ? *sch : json::value(json::object{}), "'response_format.json_schema.schema'")) return e;
      ++given;
    } else if (type != "text") {
      return unsupported("'response_format' of type '" + std::string(type) + "'");
    }
  }
  if (given > 1) return bad("'grammar', 'json_schema' and a JSON 'response_format' are exclusive: give one");
  if (!r.grammar.empty()) {
    if (auto rules = grammar::parse(r.grammar); !rules) return bad("'grammar': " + rules.error().message);
  }
  return std::nullopt;
}

std::optional<HttpError> parse_common(const json::object& o, GenRequest& r, const Tokenizer& tok, bool chat) {
  if (auto e = refuse_unsupported(o, chat)) return e;
  double v = 0;
  // Above what the context leaves, max_tokens is clamped to it (as llama.cpp does).
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    if (!chat && std::string_view(key) == "max_completion_tokens") continue;
    if (auto e = read_number(o, key, 1, 2147483647.0, v)) return e;
    if (o.contains(key) && !o.at(key).is_null()) {
      r.max_tokens = static_cast<int>(v);
      r.max_tokens_given = true;
    }
  }
  SamplingParams& s = r.sampling;
  if (auto e = read_float(o, "temperature", 0, 100, s.temperature)) return e;
  if (auto e = read_float(o, "top_p", 0, 1, s.topp)) return e;
  if (s.topp == 0.0f) s.temperature = 0.0f;  // only the most likely token: greedy
  v = 0;
  if (auto e = read_number(o, "seed", 0, 9.0e15, v)) return e;
  s.seed = static_cast<std::uint64_t>(v);
  if (auto e = read_int(o, "top_k", 0, 1e9, s.top_k)) return e;
  if (auto e = read_float(o, "min_p", 0, 1, s.min_p)) return e;
  if (auto e = read_float(o, "presence_penalty", -2, 2, s.presence_penalty)) return e;
  if (auto e = read_float(o, "frequency_penalty", -2, 2, s.frequency_penalty)) return e;
  if (auto e = read_float(o, "repeat_penalty", 0, 10, s.repeat_penalty)) return e;
  if (s.repeat_penalty == 0) return bad("'repeat_penalty' must be in (0, 10] (got 0)");
  if (auto e = read_int(o, "repeat_last_n", -1, 1e9, s.repeat_last_n)) return e;
  if (const auto* b = o.if_contains("logit_bias"); b != nullptr && !b->is_null()) {
    if (!b->is_object()) return bad("'logit_bias' must be an object of token ids to numbers");
    for (const auto& [k, x] : b->as_object()) {
      char* end = nullptr;
      const std::string key(k);
      const long id = std::strtol(key.c_str(), &end, 10);
      if (key.empty() || *end != '\0' || id < 0 || id >= tok.vocab_size()) {
        return bad("'logit_bias' key '" + key + "' is not a token id in [0, " + std::to_string(tok.vocab_size() - 1) + "]");
      }
      if (!x.is_number() || !(x.to_number<double>() >= -100 && x.to_number<double>() <= 100)) {
        return bad("'logit_bias' values must be numbers in [-100, 100]");
      }
      s.logit_bias.emplace_back(static_cast<int>(id), static_cast<float>(x.to_number<double>()));
    }
  }
  if (auto e = read_int(o, "n", 1, 128, r.n)) return e;
  if (const auto* st = o.if_contains("stream"); st != nullptr && !st->is_null()) {
    if (!st->is_bool()) return bad("'stream' must be a boolean");
    r.stream = st->as_bool();
  }
  if (const auto* st = o.if_contains("stop"); st != nullptr && !st->is_null()) {
    if (st->is_string()) {
      r.stop.emplace_back(st->as_string());
    } else if (st->is_array() && st->as_array().size() <= 4) {
      for (const auto& x : st->as_array()) {
        if (!x.is_string()) return bad("'stop' must be a string or up to 4 strings");
        r.stop.emplace_back(x.as_string());
      }
    } else {
      return bad("'stop' must be a string or up to 4 strings");
    }
    for (const auto& x : r.stop) {
      if (x.empty()) return bad("'stop' strings must not be empty");
    }
  }
  if (const auto* m = o.if_contains("model"); m != nullptr && !m->is_null() && !m->is_string()) {
    return bad("'model' must be a string");
  }
  if (const auto* lp = o.if_contains("logprobs"); lp != nullptr && !lp->is_null()) {
    if (chat) {
      if (!lp->is_bool()) return bad("'logprobs' must be a boolean");
      if (lp->as_bool()) r.logprobs = 0;
    } else {
      if (auto e = read_int(o, "logprobs", 0, 5, r.logprobs)) return e;
    }
  }
  if (chat) {
    int top = -1;
    if (auto e = read_int(o, "top_logprobs", 0, 20, top)) return e;
    if (top >= 0 && r.logprobs < 0 && top > 0) return bad("'top_logprobs' needs 'logprobs': true");
    if (top >= 0 && r.logprobs >= 0) r.logprobs = top;
  }
  if (!chat) {
    if (const auto* ec = o.if_contains("echo"); ec != nullptr && !ec->is_null()) {
      if (!ec->is_bool()) return bad("'echo' must be a boolean");
      r.echo = ec->as_bool();
      if (r.echo && r.logprobs >= 0) return unsupported("'echo' together with 'logprobs' (the prompt's log-probabilities)");
    }
  }
  if (const auto* so = o.if_contains("stream_options"); so != nullptr && !so->is_null()) {
    if (!so->is_object()) return bad("'stream_options' must be an object");
    for (const auto& [k, x] : so->as_object()) {
      if (k != "include_usage") return unsupported("'stream_options." + std::string(k) + "'");
      if (!x.is_bool()) return bad("'stream_options.include_usage' must be a boolean");
      r.include_usage = x.as_bool();
    }
  }
  if (const auto* u = o.if_contains("user"); u != nullptr && !u->is_null() && !u->is_string()) {
    return bad("'user' must be a string");
  }
  return parse_format(o, r);
}

HttpError too_long(std::size_t tokens, int context, bool at_least) {
  return HttpError{http::status::bad_request,
                   "prompt of " + std::string(at_least ? "at least " : "") + std::to_string(tokens) +
                       " tokens does not fit the context of " + std::to_string(context),
                   "invalid_request_error", "context_length_exceeded"};
}

// Adds encode(text) to the prompt, unless the text is certainly too long for the context:
// that is known from its length before any encoding (a megabyte is refused at once).
// A prompt's special-token text ("</s>") is parsed for GGUF vocabularies, as llama.cpp's
// server does; llama2.c's has no token types.
std::optional<HttpError> append_encoded(const Tokenizer& tok, std::string_view text, bool bos, int context,
                                        std::vector<int>& prompt) {
  const std::size_t at_least = prompt.size() + tok.min_encoded_tokens(text.size(), bos, false);
  if (at_least >= static_cast<std::size_t>(context)) return too_long(at_least, context, true);
  const auto t = tok.encode(text, bos, false, tok.kind() != VocabKind::llama2c);
  prompt.insert(prompt.end(), t.begin(), t.end());
  return std::nullopt;
}

std::optional<HttpError> parse_completion(const json::object& o, const Tokenizer& tok, GenRequest& r, int context) {
  const auto* p = o.if_contains("prompt");
  std::string text;
  if (p == nullptr || p->is_null()) {
    text.clear();
  } else if (p->is_string()) {
    text = std::string(p->as_string());
  } else if (p->is_array() && p->as_array().size() == 1 && p->as_array()[0].is_string()) {
    text = std::string(p->as_array()[0].as_string());
  } else {
    return HttpError{http::status::bad_request, "'prompt' must be a string (or an array of one string)"};
  }
  if (auto e = parse_common(o, r, tok, false)) return e;
  if (r.echo) r.prompt_text = text;
  return append_encoded(tok, text, tok.add_bos(), context, r.prompt);
}

// An assistant message's tool_calls: [{"id", "type": "function", "function": {"name",
// "arguments"}}], rendered into `out` as the model writes calls.
std::optional<HttpError> read_tool_calls(const json::value& calls, const std::string& at, std::string& out) {
  if (!calls.is_array()) return bad(at + " must be an array");
  std::size_t i = 0;
  for (const auto& c : calls.as_array()) {
    const std::string ci = at + "[" + std::to_string(i++) + "]";
    const auto* f = c.is_object() ? c.as_object().if_contains("function") : nullptr;
    if (f == nullptr || !f->is_object()) return bad(ci + ".function must be an object");
    const auto* name = f->as_object().if_contains("name");
    const auto* args = f->as_object().if_contains("arguments");
    if (name == nullptr || !name->is_string()) return bad(ci + ".function.name must be a string");
    std::string a = "{}";
    if (args != nullptr && args->is_string()) {
      a = std::string(args->as_string());
    } else if (args != nullptr && args->is_object()) {
      a = json::serialize(*args);
    } else if (args != nullptr && !args->is_null()) {
      return bad(ci + ".function.arguments must be a string of JSON");
    }
    if (!out.empty()) out += '\n';
    out += tool_call_text(name->as_string(), a);
  }
  return std::nullopt;
}

// tools, tool_choice and parallel_tool_calls, into r.tools; with tools in play the output's
// grammar is the calls' (tool_calls.hpp).
std::optional<HttpError> parse_tools(const json::object& o, GenRequest& r) {
  ToolSpec& t = r.tools;
  if (const auto* tools = o.if_contains("tools"); tools != nullptr && !tools->is_null()) {
    if (!tools->is_array()) return bad("'tools' must be an array");
    std::size_t i = 0;
    for (const auto& tv : tools->as_array()) {
      const std::string at = "tools[" + std::to_string(i++) + "]";
      if (!tv.is_object()) return bad(at + " must be an object");
      const auto* type = tv.as_object().if_contains("type");
      if (type == nullptr || !type->is_string()) return bad(at + ".type must be a string");
      if (type->as_string() != "function") return unsupported("'" + at + "' of type '" + std::string(type->as_string()) + "'");
      const auto* f = tv.as_object().if_contains("function");
      if (f == nullptr || !f->is_object()) return bad(at + ".function must be an object");
      const auto& fo = f->as_object();
      const auto* name = fo.if_contains("name");
      if (name == nullptr || !name->is_string() || name->as_string().empty() || name->as_string().size() > 64) {
        return bad(at + ".function.name must be a string of 1 to 64 characters");
      }
      for (const char c : name->as_string()) {
        if (std::isalnum(static_cast<unsigned char>(c)) == 0 && c != '_' && c != '-') {
          return bad(at + ".function.name may hold only letters, digits, '_' and '-'");
        }
      }
      ToolFunction fn;
      fn.name = std::string(name->as_string());
      if (const auto* d = fo.if_contains("description"); d != nullptr && !d->is_null()) {
        if (!d->is_string()) return bad(at + ".function.description must be a string");
        fn.description = std::string(d->as_string());
      }
      fn.parameters = json::object{{"type", "object"}, {"properties", json::object{}}};
      if (const auto* p = fo.if_contains("parameters"); p != nullptr && !p->is_null()) {
        if (!p->is_object()) return bad(at + ".function.parameters must be a JSON Schema object");
        fn.parameters = *p;
      }
      for (const auto& other : t.functions) {
        if (other.name == fn.name) return bad(at + ": two functions are named '" + fn.name + "'");
      }
      t.functions.push_back(std::move(fn));
    }
  }
  t.choice = t.functions.empty() ? ToolSpec::Choice::none : ToolSpec::Choice::automatic;
  if (const auto* c = o.if_contains("tool_choice"); c != nullptr && !c->is_null()) {
    if (c->is_string() && (c->as_string() == "none" || c->as_string() == "auto" || c->as_string() == "required")) {
      const auto& s = c->as_string();
      t.choice = s == "none" ? ToolSpec::Choice::none : s == "auto" ? ToolSpec::Choice::automatic : ToolSpec::Choice::required;
    } else if (c->is_object() && c->as_object().contains("function") && c->as_object().at("function").is_object() &&
               c->as_object().at("function").as_object().contains("name") &&
               c->as_object().at("function").as_object().at("name").is_string()) {
      t.choice = ToolSpec::Choice::named;
      t.named = std::string(c->as_object().at("function").as_object().at("name").as_string());
      bool found = false;
      for (const auto& f : t.functions) found = found || f.name == t.named;
      if (!found) return bad("'tool_choice' names the function '" + t.named + "', which is not in 'tools'");
    } else {
      return bad("'tool_choice' must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}");
    }
    if (t.choice != ToolSpec::Choice::none && t.functions.empty()) return bad("'tool_choice' needs 'tools'");
  }
  if (const auto* p = o.if_contains("parallel_tool_calls"); p != nullptr && !p->is_null()) {
    if (!p->is_bool()) return bad("'parallel_tool_calls' must be a boolean");
    t.parallel = p->as_bool();
  }
  if (t.choice == ToolSpec::Choice::named) t.parallel = false;  // that function, called once
  if (!t.active()) return std::nullopt;
  if (!r.grammar.empty()) {
    return unsupported("'tools' together with 'response_format', 'grammar' or 'json_schema'");
  }
  auto g = tools_grammar(t);
  if (!g) return bad(g.error().message);
  r.grammar = std::move(*g);
  if (auto rules = grammar::parse(r.grammar); !rules) return bad("tools: " + rules.error().message);
  return std::nullopt;
}

// The conversation rendered with the server's chat template (common/chat_template).
std::optional<HttpError> parse_chat(const json::object& o, const Tokenizer& tok, const ChatTemplate& tmpl, GenRequest& r,
                                    int context) {
  r.chat = true;
  const auto* m = o.if_contains("messages");
  if (m == nullptr || !m->is_array() || m->as_array().empty()) {
    return HttpError{http::status::bad_request, "'messages' must be a non-empty array"};
  }
  std::vector<ChatMessage> messages;
  bool any_user = false;
  bool last_tool = false;  // the message before was a tool result
  std::size_t text_bytes = 0;
  std::size_t index = 0;
  for (const auto& mv : m->as_array()) {
    const std::string at = "messages[" + std::to_string(index++) + "]";
    if (!mv.is_object()) return bad("each message must be an object");
    const auto& msg = mv.as_object();
    const auto* role = msg.if_contains("role");
    if (role == nullptr || !role->is_string()) return bad(at + ".role must be a string");
    std::string rs(role->as_string());
    if (rs == "developer") rs = "system";  // the newer name of the system role
    if (rs == "function") return unsupported(at + " with role 'function' (use 'tool')");
    if (rs != "system" && rs != "user" && rs != "assistant" && rs != "tool") {
      return bad(at + ".role must be system, developer, user, assistant or tool");
    }
    std::string calls_text;  // an assistant's tool calls, rendered as the model writes them
    if (const auto* calls = msg.if_contains("tool_calls"); calls != nullptr && asks_for(*calls)) {
      if (rs != "assistant") return bad(at + ".tool_calls is for assistant messages");
      if (auto e = read_tool_calls(*calls, at + ".tool_calls", calls_text)) return e;
    }
    if (const auto* name = msg.if_contains("name"); name != nullptr && !name->is_null() && !name->is_string()) {
      return bad(at + ".name must be a string");
    }
    // A string, or text parts (joined with a newline); null for an assistant message.
    const auto* content = msg.if_contains("content");
    std::string text;
    if (content != nullptr && content->is_string()) {
      text = std::string(content->as_string());
    } else if (content != nullptr && content->is_array()) {
      std::size_t part_index = 0;
      for (const auto& part : content->as_array()) {
        const std::string pat = at + ".content[" + std::to_string(part_index++) + "]";
        if (!part.is_object() || !part.as_object().contains("type") || !part.as_object().at("type").is_string()) {
          return bad(pat + " must be an object with a 'type'");
        }
        const std::string_view type = part.as_object().at("type").as_string();
        if (type != "text") return unsupported(pat + " of type '" + std::string(type) + "'");
        const auto* t = part.as_object().if_contains("text");
        if (t == nullptr || !t->is_string()) return bad(pat + ".text must be a string");
        if (part_index > 1) text += "\n";
        text += t->as_string();
      }
    } else if (!((content == nullptr || content->is_null()) && rs == "assistant")) {
      return bad(at + ".content must be a string or an array of text parts");
    }
    if (!calls_text.empty()) {
      if (!text.empty()) text += '\n';
      text += calls_text;
    }
    text_bytes += text.size();
    if (rs == "tool") {
      // A run of tool results is one user turn (every template has those).
      text = tool_response_text(text);
      if (last_tool) {
        messages.back().content += "\n" + text;
        continue;
      }
      rs = "user";
    }
    last_tool = std::string_view(role->as_string()) == "tool";
    any_user = any_user || rs == "user";
    messages.push_back({rs, std::move(text)});
  }
  if (!any_user) return HttpError{http::status::bad_request, "'messages' needs at least one user message"};
  if (auto e = parse_common(o, r, tok, true)) return e;
  if (auto e = parse_tools(o, r)) return e;
  if (r.tools.active()) {
    // The tools are offered in the system prompt: the first system message's, or a new one.
    const std::string offer = tools_prompt(r.tools);
    text_bytes += offer.size();
    auto sys = std::find_if(messages.begin(), messages.end(), [](const ChatMessage& x) { return x.role == "system"; });
    if (sys != messages.end()) {
      sys->content += "\n\n" + offer;
    } else {
      messages.insert(messages.begin(), ChatMessage{"system", offer});
    }
  }
  // Certainly too long (from the text's length alone): refused before it is encoded.
  const std::size_t at_least = tok.min_encoded_tokens(text_bytes, false, false);
  if (at_least >= static_cast<std::size_t>(context)) return too_long(at_least, context, true);
  r.prompt = encode_segments(tok, tmpl.render(messages, tok.add_bos()));
  return std::nullopt;
}
}  // namespace

std::variant<std::string, HttpError> tokenize_request(std::string_view body, const Tokenizer& tok) {
  boost::system::error_code ec;
  const auto parsed = json::parse(body, ec);
  if (ec || !parsed.is_object()) return bad("request body must be a JSON object");
  const auto& o = parsed.as_object();
  const auto* c = o.if_contains("content");
  if (c == nullptr || !c->is_string()) return bad("'content' must be a string");
  bool add_special = false, with_pieces = false;
  for (const auto& [key, flag] : {std::pair<const char*, bool*>{"add_special", &add_special}, {"with_pieces", &with_pieces}}) {
    if (const auto* v = o.if_contains(key); v != nullptr && !v->is_null()) {
      if (!v->is_bool()) return bad(std::string("'") + key + "' must be a boolean");
      *flag = v->as_bool();
    }
  }
  // As a completion's prompt is encoded: special-token text parsed for GGUF vocabularies.
  const auto ids = tok.encode(std::string(c->as_string()), add_special && tok.add_bos(), false, tok.kind() != VocabKind::llama2c);
  json::array out;
  for (const int id : ids) {
    if (with_pieces) {
      out.push_back(json::object{{"id", id}, {"piece", utf8::sanitize(tok.decode(-1, id))}});
    } else {
      out.push_back(id);
    }
  }
  return json::serialize(json::object{{"tokens", std::move(out)}});
}

std::variant<std::string, HttpError> detokenize_request(std::string_view body, const Tokenizer& tok) {
  boost::system::error_code ec;
  const auto parsed = json::parse(body, ec);
  if (ec || !parsed.is_object()) return bad("request body must be a JSON object");
  const auto* t = parsed.as_object().if_contains("tokens");
  if (t == nullptr || !t->is_array()) return bad("'tokens' must be an array of token ids");
  std::string text;
  int prev = tok.bos_id();  // a leading space after BOS is dropped, as in a generation's text
  for (const auto& v : t->as_array()) {
    if (!v.is_int64() || v.as_int64() < 0 || v.as_int64() >= tok.vocab_size()) {
      return bad("'tokens' must hold token ids in [0, " + std::to_string(tok.vocab_size() - 1) + "]");
    }
    const int id = static_cast<int>(v.as_int64());
    if (id == tok.bos_id()) {  // not text (llama2.c's tokenizer.bin spells it "\n<s>\n")
      prev = id;
      continue;
    }
    text += tok.kind() != VocabKind::llama2c ? tok.decode(prev, id) : printable_piece(tok.decode(prev, id));
    prev = id;
  }
  return json::serialize(json::object{{"content", utf8::sanitize(text)}});
}

std::variant<EmbedRequest, HttpError> parse_embedding_request(std::string_view body, const Tokenizer& tok, int context) {
  boost::system::error_code ec;
  const auto parsed = json::parse(body, ec);
  if (ec || !parsed.is_object()) return bad("request body must be a JSON object");
  const auto& o = parsed.as_object();
  EmbedRequest r;
  for (const auto& [k, v] : o) {
    if (k == "input" || k == "model" || k == "user" || k == "encoding_format" || v.is_null()) continue;
    if (k == "dimensions") return unsupported("'dimensions' (the embedding has the model's width)");
  }
  if (const auto* m = o.if_contains("model"); m != nullptr && !m->is_null() && !m->is_string()) {
    return bad("'model' must be a string");
  }
  if (const auto* f = o.if_contains("encoding_format"); f != nullptr && !f->is_null()) {
    if (!f->is_string() || (f->as_string() != "float" && f->as_string() != "base64")) {
      return bad("'encoding_format' must be \"float\" or \"base64\"");
    }
    r.base64 = f->as_string() == "base64";
  }
  const auto* in = o.if_contains("input");
  if (in == nullptr || in->is_null()) return bad("'input' is required");
  auto add_text = [&](std::string_view text) -> std::optional<HttpError> {
    if (text.empty()) return bad("'input' strings must not be empty");
    std::vector<int> ids;
    if (auto e = append_encoded(tok, text, tok.add_bos(), context + 1, ids)) return e;
    if (ids.empty()) return bad("'input' must not be empty");
    if (static_cast<int>(ids.size()) > context) return too_long(ids.size(), context, false);
    r.inputs.push_back(std::move(ids));
    return std::nullopt;
  };
  auto add_ids = [&](const json::array& a) -> std::optional<HttpError> {
    std::vector<int> ids;
    for (const auto& v : a) {
      if (!v.is_int64() || v.as_int64() < 0 || v.as_int64() >= tok.vocab_size()) {
        return bad("'input' token ids must be integers in [0, " + std::to_string(tok.vocab_size() - 1) + "]");
      }
      ids.push_back(static_cast<int>(v.as_int64()));
    }
    if (ids.empty()) return bad("'input' must not be empty");
    if (static_cast<int>(ids.size()) > context) return too_long(ids.size(), context, false);
    r.inputs.push_back(std::move(ids));
    return std::nullopt;
  };
  constexpr std::size_t kMaxInputs = 2048;  // as the OpenAI API allows
  if (in->is_string()) {
    if (auto e = add_text(in->as_string())) return *e;
  } else if (in->is_array() && !in->as_array().empty()) {
    const auto& a = in->as_array();
    if (a.size() > kMaxInputs) return bad("'input' holds more than 2048 entries");
    if (a[0].is_number()) {
      if (auto e = add_ids(a)) return *e;
    } else {
      for (const auto& x : a) {
        std::optional<HttpError> e;
        if (x.is_string()) {
          e = add_text(x.as_string());
        } else if (x.is_array()) {
          e = add_ids(x.as_array());
        } else {
          e = bad("'input' must be a string, an array of strings, or arrays of token ids");
        }
        if (e) return *e;
      }
    }
  } else {
    return bad("'input' must be a string, an array of strings, or arrays of token ids");
  }
  return r;
}

const FieldStatus* field_status(bool chat, std::string_view field) {
  for (const Field& f : kFields) {
    if (f.name == field && (f.where == 0 || f.where == (chat ? 2 : 1))) return &f.status;
  }
  return nullptr;
}

std::variant<GenRequest, HttpError> parse_generation_request(bool chat, std::string_view body, const Tokenizer& tok,
                                                             const ChatTemplate& tmpl, int context) {
  boost::system::error_code ec;
  const auto parsed = json::parse(body, ec);
  if (ec || !parsed.is_object()) return HttpError{http::status::bad_request, "request body must be a JSON object"};
  GenRequest r;
  auto err = chat ? parse_chat(parsed.as_object(), tok, tmpl, r, context) : parse_completion(parsed.as_object(), tok, r, context);
  if (err) return *err;
  if (static_cast<int>(r.prompt.size()) >= context) return too_long(r.prompt.size(), context, false);
  return r;
}

}  // namespace llamawire

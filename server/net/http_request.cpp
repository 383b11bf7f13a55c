#include "server/net/http_request.hpp"

#include <boost/json.hpp>

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

// Field readers: a present field of the wrong type is a 400 naming the field.
std::optional<HttpError> read_number(const json::object& o, const char* key, double lo, double hi, double& out) {
  const auto* v = o.if_contains(key);
  if (v == nullptr || v->is_null()) return std::nullopt;
  if (!v->is_number()) return HttpError{http::status::bad_request, std::string("'") + key + "' must be a number"};
  out = v->to_number<double>();
  if (!(out >= lo && out <= hi)) {
    return HttpError{http::status::bad_request,
                     std::string("'") + key + "' must be in [" + json::serialize(json::value(lo)) + ", " +
                         json::serialize(json::value(hi)) + "]"};
  }
  return std::nullopt;
}

std::optional<HttpError> parse_common(const json::object& o, GenRequest& r, int context) {
  double v = 0;
  if (auto e = read_number(o, "max_tokens", 1, context, v)) return e;
  if (o.contains("max_tokens") && !o.at("max_tokens").is_null()) {
    r.max_tokens = static_cast<int>(v);
    r.max_tokens_given = true;
  }
  v = r.temperature;
  if (auto e = read_number(o, "temperature", 0, 100, v)) return e;
  r.temperature = static_cast<float>(v);
  v = r.top_p;
  if (auto e = read_number(o, "top_p", 0, 1, v)) return e;
  r.top_p = static_cast<float>(v);
  v = 0;
  if (auto e = read_number(o, "seed", 0, 9.0e15, v)) return e;
  r.seed = static_cast<std::uint64_t>(v);
  if (const auto* n = o.if_contains("n"); n != nullptr && !n->is_null()) {
    if (!n->is_number() || n->to_number<double>() != 1) return HttpError{http::status::bad_request, "only n = 1 is supported"};
  }
  if (const auto* s = o.if_contains("stream"); s != nullptr && !s->is_null()) {
    if (!s->is_bool()) return HttpError{http::status::bad_request, "'stream' must be a boolean"};
    r.stream = s->as_bool();
  }
  if (const auto* s = o.if_contains("stop"); s != nullptr && !s->is_null()) {
    if (s->is_string()) {
      r.stop.emplace_back(s->as_string());
    } else if (s->is_array() && s->as_array().size() <= 4) {
      for (const auto& x : s->as_array()) {
        if (!x.is_string()) return HttpError{http::status::bad_request, "'stop' must be a string or up to 4 strings"};
        r.stop.emplace_back(x.as_string());
      }
    } else {
      return HttpError{http::status::bad_request, "'stop' must be a string or up to 4 strings"};
    }
    for (const auto& x : r.stop) {
      if (x.empty()) return HttpError{http::status::bad_request, "'stop' strings must not be empty"};
    }
  }
  if (const auto* m = o.if_contains("model"); m != nullptr && !m->is_null() && !m->is_string()) {
    return HttpError{http::status::bad_request, "'model' must be a string"};
  }
  return std::nullopt;
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
  if (auto e = parse_common(o, r, context)) return e;
  return append_encoded(tok, text, tok.add_bos(), context, r.prompt);
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
  std::size_t text_bytes = 0;
  for (const auto& mv : m->as_array()) {
    if (!mv.is_object()) return HttpError{http::status::bad_request, "each message must be an object"};
    const auto& msg = mv.as_object();
    const auto* role = msg.if_contains("role");
    const auto* content = msg.if_contains("content");
    if (role == nullptr || !role->is_string()) return HttpError{http::status::bad_request, "message 'role' must be a string"};
    if (content == nullptr || !content->is_string()) {
      return HttpError{http::status::bad_request, "message 'content' must be a string"};
    }
    const std::string rs(role->as_string());
    if (rs != "system" && rs != "user" && rs != "assistant") {
      return HttpError{http::status::bad_request, "message 'role' must be system, user or assistant"};
    }
    any_user = any_user || rs == "user";
    messages.push_back({rs, std::string(content->as_string())});
    text_bytes += messages.back().content.size();
  }
  if (!any_user) return HttpError{http::status::bad_request, "'messages' needs at least one user message"};
  if (auto e = parse_common(o, r, context)) return e;
  // Certainly too long (from the text's length alone): refused before it is encoded.
  const std::size_t at_least = tok.min_encoded_tokens(text_bytes, false, false);
  if (at_least >= static_cast<std::size_t>(context)) return too_long(at_least, context, true);
  r.prompt = encode_segments(tok, tmpl.render(messages, tok.add_bos()));
  return std::nullopt;
}
}  // namespace

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

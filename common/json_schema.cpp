#include "common/json_schema.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <cctype>
#include <map>
#include <set>
#include <vector>

namespace llamawire {

namespace json = boost::json;

namespace {

// The primitives every JSON grammar here uses. Whitespace is one character at most between
// tokens, and numbers have bounded lengths, so that a constrained generation cannot run on
// inside them (small models fill a freer whitespace rule with indentation): the output is
// compact JSON.
constexpr const char* kPrimitives = R"(ws ::= [ \t\n]?
json-char ::= [^"\\\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})
json-string ::= "\"" json-char* "\"" ws
json-int ::= "-"? ("0" | [1-9] [0-9]{0,15})
json-number ::= json-int ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,4})? ws
json-integer ::= json-int ws
json-boolean ::= ("true" | "false") ws
json-null ::= "null" ws
json-value ::= json-object | json-array | json-string | json-number | json-boolean | json-null
json-object ::= "{" ws (json-string ":" ws json-value ("," ws json-string ":" ws json-value)*)? "}" ws
json-array ::= "[" ws (json-value ("," ws json-value)*)? "]" ws
)";

const std::set<std::string, std::less<>> kRefused{
    "pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "not", "if", "then",
    "else", "dependentRequired", "dependentSchemas", "patternProperties", "propertyNames", "minProperties",
    "maxProperties", "uniqueItems", "contains", "minContains", "maxContains", "unevaluatedProperties",
    "unevaluatedItems", "additionalItems", "$anchor", "$dynamicRef", "$dynamicAnchor"};

class Converter {
 public:
  // `prefix`: the prefix of every rule made (empty: none), so that several schemas' rules
  // can share one grammar.
  Converter(const json::value& root, std::string prefix) : root_(root), prefix_(std::move(prefix)) {}

  // The rules, the first one named `start`, without the primitives.
  Result<std::string> rules(const std::string& start) {
    const std::string r = rule_for(root_, "root-value", "");
    if (!error_.empty()) return Error{make_error_code(errc::bad_message), "json_schema: " + error_};
    std::string out = start + " ::= " + r + "\n";
    for (const auto& [name, body] : rules_) out += name + " ::= " + body + "\n";
    return out;
  }

 private:
  void fail(const std::string& path, const std::string& what) {
    if (error_.empty()) error_ = (path.empty() ? std::string("the schema") : path) + ": " + what;
  }

  std::string fresh(const std::string& hint) {
    std::string base;
    for (const char c : hint) base += (std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-') ? c : '-';
    if (base.empty()) base = "v";
    return prefix_ + base + "-" + std::to_string(++counter_);
  }
  std::string add(const std::string& hint, const std::string& body) {
    const std::string name = fresh(hint);
    rules_.emplace_back(name, body);
    return name;
  }

  // The name of a rule (or a primitive) for the value `s` at `path`.
  std::string rule_for(const json::value& s, const std::string& hint, const std::string& path) {
    if (!error_.empty()) return "json-value";
    if (s.is_bool()) {
      if (!s.as_bool()) fail(path, "the schema false allows no value");
      return "json-value";
    }
    if (!s.is_object()) {
      fail(path, "a schema must be an object or a boolean");
      return "json-value";
    }
    const json::object& o = s.as_object();
    for (const auto& [k, v] : o) {
      if (kRefused.count(k) != 0) fail(path, std::string(k) + " is not supported");
    }
    if (const auto* ref = o.if_contains("$ref")) return ref_rule(*ref, path);
    if (const auto* c = o.if_contains("const")) return add(hint, gbnf_literal(json::serialize(*c)) + " ws");
    if (const auto* e = o.if_contains("enum")) {
      if (!e->is_array() || e->as_array().empty()) {
        fail(path, "enum must be a non-empty array");
        return "json-value";
      }
      std::string body;
      for (const auto& v : e->as_array()) body += (body.empty() ? "" : " | ") + gbnf_literal(json::serialize(v));
      return add(hint, "(" + body + ") ws");
    }
    for (const char* key : {"anyOf", "oneOf"}) {
      if (const auto* any = o.if_contains(key)) {
        if (!any->is_array() || any->as_array().empty()) {
          fail(path, std::string(key) + " must be a non-empty array");
          return "json-value";
        }
        std::string body;
        int i = 0;
        for (const auto& sub : any->as_array()) {
          body += (body.empty() ? "" : " | ") + rule_for(sub, hint, path + "." + key + "[" + std::to_string(i++) + "]");
        }
        return add(hint, body);
      }
    }
    if (const auto* all = o.if_contains("allOf")) {
      if (!all->is_array() || all->as_array().size() != 1) {
        fail(path, "allOf is supported with one schema only");
        return "json-value";
      }
      return rule_for(all->as_array()[0], hint, path + ".allOf[0]");
    }
    const json::value* type = o.if_contains("type");
    if (type == nullptr) {
      if (o.contains("properties") || o.contains("additionalProperties") || o.contains("required")) {
        return object_rule(o, hint, path);
      }
      if (o.contains("items") || o.contains("prefixItems")) return array_rule(o, hint, path);
      return "json-value";
    }
    if (type->is_array()) {
      std::string body;
      for (const auto& t : type->as_array()) body += (body.empty() ? "" : " | ") + typed(o, t, hint, path);
      if (body.empty()) fail(path, "type must not be an empty list");
      return add(hint, body);
    }
    return typed(o, *type, hint, path);
  }

  std::string typed(const json::object& o, const json::value& type, const std::string& hint, const std::string& path) {
    if (!type.is_string()) {
      fail(path, "type must be a string or a list of strings");
      return "json-value";
    }
    const std::string_view t = type.as_string();
    if (t == "object") return object_rule(o, hint, path);
    if (t == "array") return array_rule(o, hint, path);
    if (t == "string") return string_rule(o, hint, path);
    if (t == "number") return "json-number";
    if (t == "integer") return "json-integer";
    if (t == "boolean") return "json-boolean";
    if (t == "null") return "json-null";
    fail(path, "unknown type '" + std::string(t) + "'");
    return "json-value";
  }

  std::string string_rule(const json::object& o, const std::string& hint, const std::string& path) {
    auto count = [&](const char* key, std::int64_t& v) {
      if (const auto* n = o.if_contains(key)) {
        if (!n->is_int64() || n->as_int64() < 0 || n->as_int64() > 10000) {
          fail(path, std::string(key) + " must be an integer in [0, 10000]");
        } else {
          v = n->as_int64();
        }
        return true;
      }
      return false;
    };
    std::int64_t min = 0, max = -1;
    const bool has_min = count("minLength", min);
    const bool has_max = count("maxLength", max);
    if (!has_min && !has_max) return "json-string";
    if (has_max && max < min) fail(path, "maxLength is below minLength");
    return add(hint, "\"\\\"\" json-char{" + std::to_string(min) + "," + (has_max ? std::to_string(max) : "") +
                         "} \"\\\"\" ws");
  }

  std::string array_rule(const json::object& o, const std::string& hint, const std::string& path) {
    std::int64_t min = 0, max = -1;
    if (const auto* n = o.if_contains("minItems")) {
      if (!n->is_int64() || n->as_int64() < 0 || n->as_int64() > 1000) fail(path, "minItems must be an integer in [0, 1000]");
      else min = n->as_int64();
    }
    if (const auto* n = o.if_contains("maxItems")) {
      if (!n->is_int64() || n->as_int64() < 0 || n->as_int64() > 1000) fail(path, "maxItems must be an integer in [0, 1000]");
      else max = n->as_int64();
    }
    if (max >= 0 && max < min) fail(path, "maxItems is below minItems");
    if (const auto* prefix = o.if_contains("prefixItems")) {
      const auto* items = o.if_contains("items");
      if (!prefix->is_array() || (items != nullptr && !(items->is_bool() && !items->as_bool()))) {
        fail(path, "prefixItems is supported as a fixed tuple only (with items false or absent)");
        return "json-value";
      }
      std::string body = "\"[\" ws";
      int i = 0;
      for (const auto& sub : prefix->as_array()) {
        if (i > 0) body += " \",\" ws";
        body += " " + rule_for(sub, hint + "-" + std::to_string(i), path + ".prefixItems[" + std::to_string(i) + "]");
        ++i;
      }
      return add(hint, body + " \"]\" ws");
    }
    const json::value* items = o.if_contains("items");
    const std::string item = items != nullptr ? rule_for(*items, hint + "-item", path + ".items") : "json-value";
    std::string more;
    if (min <= 1 && max < 0) {
      more = "(\",\" ws " + item + ")*";
    } else {
      const std::int64_t lo = std::max<std::int64_t>(min - 1, 0);
      more = "(\",\" ws " + item + "){" + std::to_string(lo) + "," + (max >= 0 ? std::to_string(std::max<std::int64_t>(max - 1, 0)) : "") + "}";
    }
    std::string inner = item + " " + more;
    if (max == 0) inner.clear();
    const std::string body = min == 0 ? "\"[\" ws (" + inner + ")? \"]\" ws" : "\"[\" ws " + inner + " \"]\" ws";
    return add(hint, max == 0 ? "\"[\" ws \"]\" ws" : body);
  }

  std::string object_rule(const json::object& o, const std::string& hint, const std::string& path) {
    std::vector<std::pair<std::string, std::string>> props;  // (key literal, value rule)
    std::vector<bool> required;
    std::set<std::string> req;
    if (const auto* r = o.if_contains("required")) {
      if (!r->is_array()) fail(path, "required must be an array of strings");
      else
        for (const auto& k : r->as_array()) {
          if (k.is_string()) req.emplace(k.as_string());
          else fail(path, "required must be an array of strings");
        }
    }
    if (const auto* p = o.if_contains("properties")) {
      if (!p->is_object()) {
        fail(path, "properties must be an object");
        return "json-value";
      }
      for (const auto& [k, v] : p->as_object()) {
        const std::string key(k);
        props.emplace_back(gbnf_literal(json::serialize(json::value(key))),
                           rule_for(v, hint + "-" + key, path + ".properties." + key));
        required.push_back(req.erase(key) > 0);
      }
    }
    if (!req.empty()) fail(path, "required names '" + *req.begin() + "', which is not in properties");
    // Extra pairs after the listed ones, unless additionalProperties is false.
    std::string extra;
    const json::value* ap = o.if_contains("additionalProperties");
    if (ap == nullptr || (ap->is_bool() && ap->as_bool())) {
      extra = "json-string \":\" ws json-value";
    } else if (ap->is_object()) {
      extra = "json-string \":\" ws " + rule_for(*ap, hint + "-extra", path + ".additionalProperties");
    } else if (!ap->is_bool()) {
      fail(path, "additionalProperties must be a boolean or a schema");
    }
    if (props.empty() && extra.empty()) return add(hint, "\"{\" ws \"}\" ws");
    // tail(i): properties i.. after one has been written (each with its comma); head(i): none yet.
    const std::size_t n = props.size();
    std::vector<std::string> tail(n + 1), head(n + 1);
    tail[n] = add(hint + "-tail", extra.empty() ? "\"\"" : "(\",\" ws " + extra + ")*");
    head[n] = add(hint + "-head", extra.empty() ? "\"\"" : "(" + extra + " (\",\" ws " + extra + ")*)?");
    for (std::size_t i = n; i-- > 0;) {
      const std::string kv = props[i].first + " ws \":\" ws " + props[i].second;
      tail[i] = add(hint + "-tail", required[i] ? "\",\" ws " + kv + " " + tail[i + 1]
                                                : "\",\" ws " + kv + " " + tail[i + 1] + " | " + tail[i + 1]);
      head[i] = add(hint + "-head", required[i] ? kv + " " + tail[i + 1] : kv + " " + tail[i + 1] + " | " + head[i + 1]);
    }
    return add(hint, "\"{\" ws " + head[0] + " \"}\" ws");
  }

  std::string ref_rule(const json::value& ref, const std::string& path) {
    if (!ref.is_string()) {
      fail(path, "$ref must be a string");
      return "json-value";
    }
    const std::string r(ref.as_string());
    const json::value* target = nullptr;
    std::string name;
    for (const char* prefix : {"#/$defs/", "#/definitions/"}) {
      const std::string p(prefix);
      if (r.compare(0, p.size(), p) == 0) {
        name = r.substr(p.size());
        const std::string section = p.substr(2, p.size() - 3);
        if (root_.is_object()) {
          if (const auto* defs = root_.as_object().if_contains(section); defs != nullptr && defs->is_object()) {
            target = defs->as_object().if_contains(name);
          }
        }
      }
    }
    if (r == "#") target = &root_;
    if (target == nullptr) {
      fail(path, "$ref '" + r + "' is not a #/$defs/ or #/definitions/ entry of this schema");
      return "json-value";
    }
    if (const auto it = refs_.find(r); it != refs_.end()) return it->second;
    // Named before its body is made, so that a recursive reference finds it.
    const std::string rule = fresh("ref-" + name);
    refs_.emplace(r, rule);
    const std::size_t slot = rules_.size();
    rules_.emplace_back(rule, "");
    const std::string body = rule_for(*target, "def-" + name, r);
    rules_[slot].second = body;
    return rule;
  }

  const json::value& root_;
  std::string prefix_;
  std::vector<std::pair<std::string, std::string>> rules_;
  std::map<std::string, std::string> refs_;
  int counter_ = 0;
  std::string error_;
};

}  // namespace

Result<std::string> json_schema_to_gbnf(const json::value& schema) {
  auto rules = Converter(schema, "").rules("root");
  if (!rules) return rules;
  return *rules + kPrimitives;
}

Result<std::string> json_schema_rules(const json::value& schema, const std::string& name) {
  return Converter(schema, name + "-").rules(name);
}

std::string json_primitives_gbnf() { return kPrimitives; }

std::string gbnf_literal(std::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default: out += c;
    }
  }
  return out + "\"";
}


std::string json_object_gbnf() { return std::string("root ::= json-object\n") + kPrimitives; }

}  // namespace llamawire

#include "common/grammar.hpp"

#include "common/tokenizer.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <optional>
#include <set>

namespace llamawire::grammar {

namespace {

constexpr std::size_t kMaxText = 1u << 20;
constexpr std::size_t kMaxRules = 10000;
constexpr std::uint32_t kMaxRepeat = 10000;
constexpr std::size_t kMaxMasks = 256;

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

// The element after a character class (past its ranges and alternatives).
const Elem* after_class(const Elem* e) {
  ++e;
  while (e->op == Op::range_hi || e->op == Op::chr_alt) ++e;
  return e;
}

bool class_matches(const Elem* e, std::uint32_t cp) {
  if (e->op == Op::any) return true;
  const bool negated = e->op == Op::chr_not;
  bool found = false;
  do {
    std::uint32_t lo = e->value, hi = lo;
    if ((e + 1)->op == Op::range_hi) {
      hi = (e + 1)->value;
      ++e;
    }
    if (lo <= cp && cp <= hi) found = true;
    ++e;
  } while (e->op == Op::chr_alt);
  return found != negated;
}

// Whether some code point in [lo, hi] may match (for a character still being written).
bool class_intersects(const Elem* e, std::uint32_t lo, std::uint32_t hi) {
  if (e->op == Op::any) return true;
  const bool negated = e->op == Op::chr_not;
  do {
    std::uint32_t a = e->value, b = a;
    if ((e + 1)->op == Op::range_hi) {
      b = (e + 1)->value;
      ++e;
    }
    if (!negated && a <= hi && lo <= b) return true;
    if (negated && a <= lo && hi <= b) return false;  // the whole range is excluded
    ++e;
  } while (e->op == Op::chr_alt);
  return negated;
}

class Parser {
 public:
  explicit Parser(std::string_view src) : src_(src) {}

  Result<Rules> run() {
    if (src_.size() > kMaxText) return fail("grammar longer than 1 MiB");
    skip(true);
    while (pos_ < src_.size() && ok_) {
      const std::size_t at = pos_;
      const std::string name = parse_name();
      if (!ok_) break;
      skip(false);
      if (src_.substr(pos_, 3) != "::=") {
        error("expected ::= after rule name '" + name + "'");
        break;
      }
      pos_ += 3;
      skip(true);
      const std::uint32_t id = rule_id(name);
      if (defined_[id]) {
        pos_ = at;
        error("rule '" + name + "' is defined twice");
        break;
      }
      std::vector<Elem> elems;
      parse_alternatives(name, 0, elems);
      elems.push_back({Op::end, 0});
      out_.rules[id] = std::move(elems);
      defined_[id] = true;
      skip(true);
    }
    if (!ok_) return fail(message_);
    for (std::size_t i = 0; i < out_.rules.size(); ++i) {
      if (!defined_[i]) return fail("undefined rule '" + out_.names[i] + "'");
    }
    const auto root = ids_.find("root");
    if (root == ids_.end()) return fail("the grammar has no 'root' rule");
    out_.root = root->second;
    if (auto e = left_recursion()) return fail(*e);
    return std::move(out_);
  }

 private:
  Result<Rules> fail(const std::string& m) { return Error{make_error_code(errc::bad_message), "grammar: " + m}; }

  void error(const std::string& m) {
    if (!ok_) return;
    ok_ = false;
    int line = 1, col = 1;
    for (std::size_t i = 0; i < std::min(pos_, src_.size()); ++i) {
      if (src_[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    message_ = "line " + std::to_string(line) + ", column " + std::to_string(col) + ": " + m;
  }

  bool eof() const { return pos_ >= src_.size(); }
  char peek(std::size_t ahead = 0) const { return pos_ + ahead < src_.size() ? src_[pos_ + ahead] : '\0'; }

  // Spaces, tabs and comments; newlines too when `newlines`.
  void skip(bool newlines) {
    while (!eof()) {
      const char c = peek();
      if (c == ' ' || c == '\t' || c == '\r' || (newlines && c == '\n')) {
        ++pos_;
      } else if (c == '#') {
        while (!eof() && peek() != '\n') ++pos_;
      } else {
        break;
      }
    }
  }

  // At a newline outside parentheses: whether the rule goes on (the next line does not begin
  // a new rule, "name ::=").
  bool continues_after_newline() {
    std::size_t p = pos_;
    for (;;) {
      while (p < src_.size() && (src_[p] == ' ' || src_[p] == '\t' || src_[p] == '\r' || src_[p] == '\n')) ++p;
      if (p < src_.size() && src_[p] == '#') {
        while (p < src_.size() && src_[p] != '\n') ++p;
        continue;
      }
      break;
    }
    if (p >= src_.size()) return false;
    std::size_t q = p;
    while (q < src_.size() && is_name_char(src_[q])) ++q;
    if (q == p) return true;
    while (q < src_.size() && (src_[q] == ' ' || src_[q] == '\t')) ++q;
    return src_.substr(q, 3) != "::=";
  }

  std::string parse_name() {
    const std::size_t b = pos_;
    while (!eof() && is_name_char(peek())) ++pos_;
    if (pos_ == b) {
      error("expected a rule name");
      return {};
    }
    return std::string(src_.substr(b, pos_ - b));
  }

  std::uint32_t rule_id(const std::string& name) {
    const auto it = ids_.find(name);
    if (it != ids_.end()) return it->second;
    return add_rule(name);
  }
  std::uint32_t add_rule(const std::string& name) {
    if (out_.rules.size() >= kMaxRules) {
      error("more than " + std::to_string(kMaxRules) + " rules");
      return 0;
    }
    const auto id = static_cast<std::uint32_t>(out_.rules.size());
    out_.rules.emplace_back();
    out_.names.push_back(name);
    defined_.push_back(false);
    ids_.emplace(name, id);
    return id;
  }
  std::uint32_t generated(const std::string& base, std::vector<Elem> elems) {
    const std::uint32_t id = add_rule(base + "-" + std::to_string(out_.rules.size()));
    if (!ok_) return 0;
    elems.push_back({Op::end, 0});
    out_.rules[id] = std::move(elems);
    defined_[id] = true;
    return id;
  }

  // One code point of a literal or class, escapes decoded.
  std::uint32_t parse_char() {
    if (eof()) {
      error("unexpected end of the grammar");
      return 0;
    }
    const auto c = static_cast<unsigned char>(peek());
    if (c == '\\') {
      ++pos_;
      const char e = peek();
      ++pos_;
      auto hex = [&](int n) -> std::uint32_t {
        std::uint32_t v = 0;
        for (int i = 0; i < n; ++i) {
          const char h = peek();
          int d = -1;
          if (h >= '0' && h <= '9') d = h - '0';
          if (h >= 'a' && h <= 'f') d = h - 'a' + 10;
          if (h >= 'A' && h <= 'F') d = h - 'A' + 10;
          if (d < 0) {
            error("expected " + std::to_string(n) + " hex digits");
            return 0;
          }
          v = v * 16 + static_cast<std::uint32_t>(d);
          ++pos_;
        }
        if (v > 0x10FFFF) error("code point past U+10FFFF");
        return v;
      };
      switch (e) {
        case 'n': return '\n';
        case 'r': return '\r';
        case 't': return '\t';
        case '0': return 0;
        case 'x': return hex(2);
        case 'u': return hex(4);
        case 'U': return hex(8);
        case '\\':
        case '"':
        case '\'':
        case '[':
        case ']':
        case '-':
        case '^':
        case '/':
        case '.': return static_cast<std::uint32_t>(e);
        default: error(std::string("unknown escape \\") + e); return 0;
      }
    }
    // UTF-8 text of the grammar itself.
    const int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || pos_ + static_cast<std::size_t>(len) > src_.size()) {
      error("malformed UTF-8 in the grammar");
      return 0;
    }
    std::uint32_t v = len == 1 ? c : c & (0x7Fu >> len);
    for (int i = 1; i < len; ++i) {
      const auto b = static_cast<unsigned char>(src_[pos_ + static_cast<std::size_t>(i)]);
      if ((b & 0xC0) != 0x80) {
        error("malformed UTF-8 in the grammar");
        return 0;
      }
      v = v << 6 | (b & 0x3F);
    }
    pos_ += static_cast<std::size_t>(len);
    return v;
  }

  std::uint32_t parse_number() {
    std::uint64_t v = 0;
    const std::size_t b = pos_;
    while (!eof() && peek() >= '0' && peek() <= '9') {
      v = v * 10 + static_cast<std::uint64_t>(peek() - '0');
      if (v > kMaxRepeat) {
        error("repetition count over " + std::to_string(kMaxRepeat));
        return 0;
      }
      ++pos_;
    }
    if (pos_ == b) error("expected a number");
    return static_cast<std::uint32_t>(v);
  }

  void parse_alternatives(const std::string& rule, int depth, std::vector<Elem>& out) {
    parse_sequence(rule, depth, out);
    while (ok_ && peek() == '|') {
      ++pos_;
      skip(true);
      out.push_back({Op::alt, 0});
      parse_sequence(rule, depth, out);
    }
  }

  void parse_sequence(const std::string& rule, int depth, std::vector<Elem>& out) {
    std::size_t unit = out.size();  // where the last item begins (what a postfix repeats)
    bool have_unit = false;
    while (ok_) {
      skip(depth > 0);
      if (eof()) break;
      const char c = peek();
      if (c == '\n') {
        if (!continues_after_newline()) break;
        skip(true);
        continue;
      }
      if (c == '|' || c == ')') break;
      if (c == '*' || c == '+' || c == '?' || c == '{') {
        if (!have_unit) {
          error(std::string("'") + c + "' with nothing to repeat");
          return;
        }
        repeat(rule, out, unit);
        have_unit = false;
        continue;
      }
      unit = out.size();
      have_unit = true;
      if (c == '"') {
        ++pos_;
        while (ok_ && peek() != '"') {
          if (eof()) {
            error("unterminated string");
            return;
          }
          out.push_back({Op::chr, parse_char()});
        }
        ++pos_;
        if (out.size() == unit) have_unit = false;  // "" matches nothing: nothing to repeat
      } else if (c == '[') {
        ++pos_;
        Op first = Op::chr;
        if (peek() == '^') {
          first = Op::chr_not;
          ++pos_;
        }
        bool start = true;
        while (ok_ && peek() != ']') {
          if (eof()) {
            error("unterminated character class");
            return;
          }
          out.push_back({start ? first : Op::chr_alt, parse_char()});
          start = false;
          if (peek() == '-' && peek(1) != ']' && peek(1) != '\0') {
            ++pos_;
            const std::uint32_t hi = parse_char();
            if (hi < out.back().value) error("character range ends before it begins");
            out.push_back({Op::range_hi, hi});
          }
        }
        if (start) {
          error("empty character class");
          return;
        }
        ++pos_;
      } else if (c == '(') {
        ++pos_;
        skip(true);
        std::vector<Elem> sub;
        parse_alternatives(rule, depth + 1, sub);
        skip(true);
        if (peek() != ')') {
          error("expected ')'");
          return;
        }
        ++pos_;
        out.push_back({Op::rule, generated(rule, std::move(sub))});
      } else if (c == '.') {
        ++pos_;
        out.push_back({Op::any, 0});
      } else if (is_name_char(c)) {
        out.push_back({Op::rule, rule_id(parse_name())});
      } else {
        error(std::string("unexpected '") + c + "'");
        return;
      }
    }
  }

  // Applies the postfix at pos_ to out[unit, end).
  void repeat(const std::string& rule, std::vector<Elem>& out, std::size_t unit) {
    std::vector<Elem> item(out.begin() + static_cast<std::ptrdiff_t>(unit), out.end());
    out.resize(unit);
    // The repeated item as one element: itself when it already is a rule reference.
    Elem one = item.size() == 1 && item[0].op == Op::rule ? item[0] : Elem{Op::rule, generated(rule, item)};
    std::uint32_t min = 0, max = 0;
    bool unbounded = false;
    const char c = peek();
    ++pos_;
    if (c == '*') {
      unbounded = true;
    } else if (c == '+') {
      min = 1;
      unbounded = true;
    } else if (c == '?') {
      max = 1;
    } else {  // {m}, {m,}, {m,n}
      skip(false);
      min = parse_number();
      skip(false);
      max = min;
      if (peek() == ',') {
        ++pos_;
        skip(false);
        if (peek() == '}') {
          unbounded = true;
        } else {
          max = parse_number();
          if (max < min) error("repetition maximum below its minimum");
        }
        skip(false);
      }
      if (peek() != '}') {
        error("expected '}'");
        return;
      }
      ++pos_;
    }
    if (!ok_) return;
    for (std::uint32_t i = 0; i < min; ++i) out.push_back(one);
    if (unbounded) {
      // star ::= item star | (empty)
      const std::uint32_t star = add_rule(rule + "-" + std::to_string(out_.rules.size()));
      if (!ok_) return;
      out_.rules[star] = {one, {Op::rule, star}, {Op::alt, 0}, {Op::end, 0}};
      defined_[star] = true;
      out.push_back({Op::rule, star});
      return;
    }
    // (max - min) optional items, nested: opt_k ::= item opt_(k+1) | (empty)
    std::uint32_t next = 0;
    bool have_next = false;
    for (std::uint32_t k = 0; k < max - min; ++k) {
      std::vector<Elem> body{one};
      if (have_next) body.push_back({Op::rule, next});
      body.push_back({Op::alt, 0});
      next = generated(rule, std::move(body));
      have_next = true;
      if (!ok_) return;
    }
    if (have_next) out.push_back({Op::rule, next});
  }

  // A rule that reaches itself without a character in between cannot be matched (and
  // would expand forever).
  std::optional<std::string> left_recursion() const {
    const std::size_t n = out_.rules.size();
    std::vector<char> nullable(n, 0);
    for (bool changed = true; changed;) {
      changed = false;
      for (std::size_t r = 0; r < n; ++r) {
        if (nullable[r]) continue;
        bool alt_nullable = true;
        for (const Elem& e : out_.rules[r]) {
          if (e.op == Op::alt || e.op == Op::end) {
            if (alt_nullable) {
              nullable[r] = 1;
              changed = true;
              break;
            }
            alt_nullable = true;
          } else if (e.op == Op::rule) {
            alt_nullable = alt_nullable && nullable[e.value];
          } else if (e.op == Op::chr || e.op == Op::chr_not || e.op == Op::any) {
            alt_nullable = false;
          }
        }
      }
    }
    // Edges r -> s where s may come first in r.
    std::vector<std::vector<std::uint32_t>> first(n);
    for (std::size_t r = 0; r < n; ++r) {
      bool open = true;  // still at the start of the alternative
      for (const Elem& e : out_.rules[r]) {
        if (e.op == Op::alt || e.op == Op::end) {
          open = true;
        } else if (!open) {
          continue;
        } else if (e.op == Op::rule) {
          first[r].push_back(e.value);
          open = nullable[e.value] != 0;
        } else if (e.op == Op::chr || e.op == Op::chr_not || e.op == Op::any) {
          open = false;
        }
      }
    }
    std::vector<char> mark(n, 0);  // 0 new, 1 on the path, 2 done
    std::function<std::optional<std::uint32_t>(std::uint32_t)> visit = [&](std::uint32_t r) -> std::optional<std::uint32_t> {
      mark[r] = 1;
      for (const std::uint32_t s : first[r]) {
        if (mark[s] == 1) return s;
        if (mark[s] == 0) {
          if (auto c = visit(s)) return c;
        }
      }
      mark[r] = 2;
      return std::nullopt;
    };
    for (std::uint32_t r = 0; r < n; ++r) {
      if (mark[r] != 0) continue;
      if (auto c = visit(r)) return "rule '" + out_.names[*c] + "' is left-recursive (it reaches itself before a character)";
    }
    return std::nullopt;
  }

  std::string_view src_;
  std::size_t pos_ = 0;
  bool ok_ = true;
  std::string message_;
  Rules out_;
  std::map<std::string, std::uint32_t> ids_;
  std::vector<bool> defined_;
};

}  // namespace

Result<Rules> parse(std::string_view text) { return Parser(text).run(); }

TokenTrie::TokenTrie(const Tokenizer& tok) : vocab_size_(tok.vocab_size()) {
  nodes_.emplace_back();
  texts_.resize(static_cast<std::size_t>(vocab_size_));
  const SpecialTokens& sp = tok.special();
  for (int id = 0; id < vocab_size_; ++id) {
    if (id == sp.bos || sp.ends_turn(id)) continue;
    const TokenType ty = tok.type(id);
    if (ty == TokenType::control || ty == TokenType::unknown || ty == TokenType::unused) continue;
    std::string text(tok.kind() == VocabKind::llama2c ? printable_piece(tok.decode(-1, id)) : tok.decode(-1, id));
    if (text.empty()) continue;
    std::uint32_t node = 0;
    for (const char ch : text) {
      const auto b = static_cast<std::uint8_t>(ch);
      std::uint32_t child = nodes_[node].first_child;
      while (child != 0 && nodes_[child].byte != b) child = nodes_[child].next_sibling;
      if (child == 0) {
        child = static_cast<std::uint32_t>(nodes_.size());
        Node n;
        n.byte = b;
        n.next_sibling = nodes_[node].first_child;
        nodes_.push_back(n);
        nodes_[node].first_child = child;
      }
      node = child;
    }
    if (nodes_[node].token >= 0) {
      duplicates_.emplace_back(id, nodes_[node].token);
    } else {
      nodes_[node].token = id;
    }
    texts_[static_cast<std::size_t>(id)] = std::move(text);
  }
}

CompiledGrammar::CompiledGrammar(Rules rules, std::shared_ptr<const TokenTrie> trie)
    : rules_(std::move(rules)), trie_(std::move(trie)), entry_{{Op::rule, rules_.root}, {Op::end, 0}} {
  states_.emplace_back();  // dead
}

std::size_t CompiledGrammar::states() const {
  std::lock_guard lock(mutex_);
  return states_.size();
}

void CompiledGrammar::expand(Stack stack, std::vector<Stack>& out) const {
  if (stack.empty()) {
    out.push_back(std::move(stack));
    return;
  }
  const Elem* top = stack.back();
  if (top->op != Op::rule) {
    out.push_back(std::move(stack));
    return;
  }
  stack.pop_back();
  const Elem* after = top + 1;
  if (after->op != Op::end && after->op != Op::alt) stack.push_back(after);
  const std::vector<Elem>& r = rules_.rules[top->value];
  const Elem* alt = r.data();
  for (;;) {
    Stack s = stack;
    if (alt->op != Op::end && alt->op != Op::alt) s.push_back(alt);
    expand(std::move(s), out);
    while (alt->op != Op::end && alt->op != Op::alt) ++alt;
    if (alt->op == Op::end) break;
    ++alt;
  }
}

CompiledGrammar::StateId CompiledGrammar::intern(State st) {
  std::sort(st.stacks.begin(), st.stacks.end());
  st.stacks.erase(std::unique(st.stacks.begin(), st.stacks.end()), st.stacks.end());
  if (st.stacks.empty()) return kDead;
  const std::uint64_t partial = static_cast<std::uint64_t>(st.partial) << 8 | static_cast<std::uint64_t>(st.partial_left);
  auto key = std::make_pair(st.stacks, partial);
  const auto it = ids_.find(key);
  if (it != ids_.end()) return it->second;
  const auto id = static_cast<StateId>(states_.size());
  states_.push_back(std::move(st));
  ids_.emplace(std::move(key), id);
  return id;
}

CompiledGrammar::StateId CompiledGrammar::start() {
  std::lock_guard lock(mutex_);
  State st;
  expand(Stack{entry_.data()}, st.stacks);  // the root's alternatives, as a reference expands
  return intern(std::move(st));
}

bool CompiledGrammar::accept_range(const State& st, std::uint32_t lo, std::uint32_t hi) const {
  for (const Stack& s : st.stacks) {
    if (!s.empty() && class_intersects(s.back(), lo, hi)) return true;
  }
  return false;
}

CompiledGrammar::StateId CompiledGrammar::step(StateId s, std::uint8_t byte) {
  if (s == kDead) return kDead;
  const std::uint64_t key = static_cast<std::uint64_t>(s) << 8 | byte;
  if (const auto it = transitions_.find(key); it != transitions_.end()) return it->second;
  const State cur = states_[s];
  StateId next = kDead;
  std::uint32_t partial = cur.partial;
  int left = cur.partial_left;
  bool complete = false;
  bool valid = true;
  if (left == 0) {
    if (byte < 0x80) {
      partial = byte;
      complete = true;
    } else if (byte >= 0xC2 && byte <= 0xDF) {
      partial = byte & 0x1Fu;
      left = 1;
    } else if ((byte & 0xF0) == 0xE0) {
      partial = byte & 0x0Fu;
      left = 2;
    } else if (byte >= 0xF0 && byte <= 0xF4) {
      partial = byte & 0x07u;
      left = 3;
    } else {
      valid = false;
    }
  } else if ((byte & 0xC0) == 0x80) {
    partial = partial << 6 | (byte & 0x3Fu);
    complete = --left == 0;
  } else {
    valid = false;
  }
  if (valid && complete) {
    State ns;
    for (const Stack& st : cur.stacks) {
      if (st.empty() || !class_matches(st.back(), partial)) continue;
      Stack popped(st.begin(), st.end() - 1);
      const Elem* after = after_class(st.back());
      if (after->op != Op::end && after->op != Op::alt) popped.push_back(after);
      expand(std::move(popped), ns.stacks);
    }
    next = intern(std::move(ns));
  } else if (valid) {
    const std::uint32_t lo = partial << (6 * left);
    const std::uint32_t hi = lo | ((1u << (6 * left)) - 1);
    if (accept_range(cur, lo, std::min(hi, 0x10FFFFu))) {
      State ns;
      ns.stacks = cur.stacks;
      ns.partial = partial;
      ns.partial_left = left;
      next = intern(std::move(ns));
    }
  }
  transitions_.emplace(key, next);
  return next;
}

CompiledGrammar::StateId CompiledGrammar::advance(StateId s, std::string_view bytes) {
  std::lock_guard lock(mutex_);
  for (const char c : bytes) {
    s = step(s, static_cast<std::uint8_t>(c));
    if (s == kDead) break;
  }
  return s;
}

CompiledGrammar::StateId CompiledGrammar::advance_token(StateId s, int token) {
  if (token < 0 || token >= trie_->vocab_size() || trie_->text(token).empty()) return kDead;
  return advance(s, trie_->text(token));
}

bool CompiledGrammar::accepting(StateId s) {
  std::lock_guard lock(mutex_);
  const State& st = states_[s];
  if (s == kDead || st.partial_left != 0) return false;
  return std::any_of(st.stacks.begin(), st.stacks.end(), [](const Stack& k) { return k.empty(); });
}

bool CompiledGrammar::finished(StateId s) {
  std::lock_guard lock(mutex_);
  const State& st = states_[s];
  if (s == kDead || st.partial_left != 0) return false;
  return std::all_of(st.stacks.begin(), st.stacks.end(), [](const Stack& k) { return k.empty(); });
}

void CompiledGrammar::walk(std::uint32_t node, StateId s, std::vector<std::uint64_t>& bits) {
  const auto& nodes = trie_->nodes();
  for (std::uint32_t c = nodes[node].first_child; c != 0; c = nodes[c].next_sibling) {
    const StateId t = step(s, nodes[c].byte);
    if (t == kDead) continue;
    if (nodes[c].token >= 0) bits[static_cast<std::size_t>(nodes[c].token) / 64] |= 1ull << (nodes[c].token % 64);
    walk(c, t, bits);
  }
}

std::shared_ptr<const std::vector<std::uint64_t>> CompiledGrammar::mask(StateId s) {
  std::lock_guard lock(mutex_);
  if (const auto it = masks_.find(s); it != masks_.end()) return it->second;
  auto bits = std::make_shared<std::vector<std::uint64_t>>((static_cast<std::size_t>(trie_->vocab_size()) + 63) / 64, 0);
  if (s != kDead) walk(0, s, *bits);
  for (const auto& [tok, twin] : trie_->duplicates()) {
    if ((*bits)[static_cast<std::size_t>(twin) / 64] >> (twin % 64) & 1) {
      (*bits)[static_cast<std::size_t>(tok) / 64] |= 1ull << (tok % 64);
    }
  }
  masks_.emplace(s, bits);
  mask_order_.push_back(s);
  if (mask_order_.size() > kMaxMasks) {
    masks_.erase(mask_order_.front());
    mask_order_.pop_front();
  }
  return bits;
}

bool Matcher::apply(std::span<float> logits, std::span<const int> ends) {
  const auto bits = g_->mask(state_);
  const bool may_end = g_->accepting(state_);
  bool any = false;
  const auto V = std::min(logits.size(), bits->size() * 64);
  std::vector<std::pair<int, float>> kept_ends;
  for (const int e : ends) {
    if (may_end && e >= 0 && static_cast<std::size_t>(e) < logits.size()) kept_ends.emplace_back(e, logits[static_cast<std::size_t>(e)]);
  }
  for (std::size_t i = 0; i < V; ++i) {
    if ((*bits)[i / 64] >> (i % 64) & 1) {
      any = true;
    } else {
      logits[i] = -std::numeric_limits<float>::infinity();
    }
  }
  for (std::size_t i = V; i < logits.size(); ++i) logits[i] = -std::numeric_limits<float>::infinity();
  for (const auto& [e, v] : kept_ends) {
    logits[static_cast<std::size_t>(e)] = v;
    any = true;
  }
  return any;
}

bool Matcher::accept(int token) {
  state_ = g_->advance_token(state_, token);
  return state_ != CompiledGrammar::kDead;
}

}  // namespace llamawire::grammar

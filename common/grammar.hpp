// Constrained decoding: a grammar (GBNF, the notation llama.cpp uses) compiled to rules of
// elements, and a matcher that, token by token, knows which tokens of a vocabulary keep the
// output inside the language, so that the sampler draws only from those.
//
// GBNF, as accepted here:
//   rule      ::= name "::=" alternatives          (one rule per line; a rule continues on
//                                                  the next lines until the next "name ::=")
//   alternatives ::= sequence ("|" sequence)*
//   sequence  ::= (item postfix?)*
//   item      ::= "literal" | [class] | [^class] | name | "(" alternatives ")" | "."
//   postfix   ::= "*" | "+" | "?" | "{" m "}" | "{" m "," "}" | "{" m "," n "}"
//   # comments run to the end of the line
// Literals and classes take the escapes \n \r \t \\ \" \' \[ \] \- \xHH \uHHHH \UHHHHHHHH.
// Names are letters, digits and "-". The start rule is "root". Text is matched as Unicode
// code points (UTF-8); a token that ends inside a character is allowed when some character
// it may become is.
//
// Matching is a pushdown automaton over stacks of grammar positions; a state is the set of
// stacks that the output so far leaves (with a partial UTF-8 character, if any). States are
// interned, and both the byte transitions between states and each state's token mask are
// cached in the CompiledGrammar, which requests with the same grammar share: a state's mask
// is computed once (a walk of the vocabulary's byte trie, pruned where no stack survives),
// later requests reuse it.
#pragma once

#include "common/error.hpp"

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace llamawire {

class Tokenizer;

namespace grammar {

enum class Op : std::uint8_t {
  end,       // end of a rule
  alt,       // start of the next alternative
  rule,      // reference to rule `value`
  chr,       // a character class begins: code point `value` (or a range, see range_hi)
  chr_not,   // a negated class begins with `value`
  range_hi,  // the previous chr/chr_not/chr_alt is the start of the range up to `value`
  chr_alt,   // one more code point (or range start) of the current class
  any,       // any code point
};

struct Elem {
  Op op;
  std::uint32_t value;
};

// A parsed grammar: rules of elements (each rule: alternatives separated by `alt`, ended
// by `end`).
struct Rules {
  std::vector<std::vector<Elem>> rules;
  std::vector<std::string> names;  // per rule (generated ones end in "-<n>")
  std::uint32_t root = 0;
};

// Parses GBNF text; the error names the line and column. Refuses undefined rules, a missing
// root, left recursion (a rule reaching itself before consuming a character), and more than
// 10000 rules or 1 MiB of text.
Result<Rules> parse(std::string_view text);

// The vocabulary as byte strings, in a trie, for masking. Tokens whose text is empty
// (control tokens, BOS ...) are never allowed by a grammar.
class TokenTrie {
 public:
  explicit TokenTrie(const Tokenizer& tok);
  int vocab_size() const { return vocab_size_; }
  struct Node {
    std::uint32_t first_child = 0;  // index into nodes_ of the first child (0: none)
    std::uint32_t next_sibling = 0;
    std::int32_t token = -1;  // the token whose text ends here, if any
    std::uint8_t byte = 0;
  };
  const std::vector<Node>& nodes() const { return nodes_; }
  // Tokens with the same text as another (the trie holds one of them per node).
  const std::vector<std::pair<int, int>>& duplicates() const { return duplicates_; }
  const std::string& text(int token) const { return texts_[static_cast<std::size_t>(token)]; }

 private:
  int vocab_size_ = 0;
  std::vector<Node> nodes_;  // nodes_[0] is the root
  std::vector<std::pair<int, int>> duplicates_;  // (token, the token with the same text in the trie)
  std::vector<std::string> texts_;
};

// A grammar with its caches, for one vocabulary; shared (thread-safe).
class CompiledGrammar {
 public:
  CompiledGrammar(Rules rules, std::shared_ptr<const TokenTrie> trie);
  CompiledGrammar(const CompiledGrammar&) = delete;
  CompiledGrammar& operator=(const CompiledGrammar&) = delete;

  using StateId = std::uint32_t;
  static constexpr StateId kDead = 0;
  StateId start();
  // The state after `bytes` (kDead when they leave the language).
  StateId advance(StateId s, std::string_view bytes);
  StateId advance_token(StateId s, int token);
  // The output may end here (some stack is empty, and no character is half written).
  bool accepting(StateId s);
  // Nothing can follow: the only way on is to end.
  bool finished(StateId s);
  // Which tokens may come next, one bit per token (a shared, immutable mask).
  std::shared_ptr<const std::vector<std::uint64_t>> mask(StateId s);

  const TokenTrie& trie() const { return *trie_; }
  const Rules& rules() const { return rules_; }
  std::size_t states() const;

 private:
  using Stack = std::vector<const Elem*>;
  struct State {
    std::vector<Stack> stacks;  // sorted, unique
    std::uint32_t partial = 0;  // a character begun: its bits so far
    int partial_left = 0;       // bytes it still needs (0: none)
  };
  StateId intern(State st);
  void expand(Stack stack, std::vector<Stack>& out) const;  // to char classes (or empty)
  StateId step(StateId s, std::uint8_t byte);  // with mutex_ held
  bool accept_range(const State& st, std::uint32_t lo, std::uint32_t hi) const;
  void walk(std::uint32_t node, StateId s, std::vector<std::uint64_t>& bits);

  Rules rules_;
  std::shared_ptr<const TokenTrie> trie_;
  std::vector<Elem> entry_;  // a reference to the root rule: where every match begins
  mutable std::mutex mutex_;
  std::vector<State> states_;  // [0] is dead
  std::map<std::pair<std::vector<Stack>, std::uint64_t>, StateId> ids_;
  std::unordered_map<std::uint64_t, StateId> transitions_;  // (state << 8 | byte) -> state
  std::unordered_map<StateId, std::shared_ptr<const std::vector<std::uint64_t>>> masks_;
  std::list<StateId> mask_order_;  // oldest first, for the bound on cached masks
};

// A generation's place in its grammar.
class Matcher {
 public:
  explicit Matcher(std::shared_ptr<CompiledGrammar> g) : g_(std::move(g)), state_(g_->start()) {}
  // Sets the logits of the tokens the grammar does not allow to -infinity; the end tokens
  // (`ends`, e.g. EOS) stay only where the output may end. False when no token is left.
  bool apply(std::span<float> logits, std::span<const int> ends);
  // Takes a drawn token (an end token is not text); false if the grammar refuses it.
  bool accept(int token);
  bool accepting() const { return g_->accepting(state_); }
  bool finished() const { return g_->finished(state_); }

 private:
  std::shared_ptr<CompiledGrammar> g_;
  CompiledGrammar::StateId state_;
};

}  // namespace grammar
}  // namespace llamawire

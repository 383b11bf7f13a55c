// Chat templates (recognition from Jinja text, rendering, the incremental pieces) and the
// SentencePiece vocabulary's own cases: user-defined and control tokens in text.
#include "common/chat_template.hpp"
#include "common/tokenizer.hpp"
#include "server/model/gguf.hpp"
#include "server/model/weight_store.hpp"
#include "tests/support.hpp"

#include <catch2/catch.hpp>

namespace lw = llamawire;
namespace t = llamawire::test;

namespace {

// A small SentencePiece vocabulary: specials, a user-defined token, byte tokens, letters.
lw::Tokenizer small_spm() {
  lw::Vocab v;
  v.kind = lw::VocabKind::spm;
  auto add = [&](std::string p, lw::TokenType t, float score = 0.0f) {
    v.pieces.push_back(std::move(p));
    v.types.push_back(t);
    v.scores.push_back(score);
  };
  add("<unk>", lw::TokenType::unknown);
  add("<s>", lw::TokenType::control);
  add("</s>", lw::TokenType::control);
  add("<|im_start|>", lw::TokenType::control);
  add("<|im_end|>", lw::TokenType::control);
  add("<|user|>", lw::TokenType::user_defined);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    add(name, lw::TokenType::byte);
  }
  for (char c = 'a'; c <= 'z'; ++c) add(std::string(1, c), lw::TokenType::normal, -1.0f);
  add("\xe2\x96\x81", lw::TokenType::normal, -1.0f);           // the space marker alone
  add("\xe2\x96\x81hi", lw::TokenType::normal, -0.5f);
  add("hi", lw::TokenType::normal, -0.6f);
  add("\n", lw::TokenType::normal, -1.0f);
  return lw::Tokenizer::from_vocab(std::move(v), "small").value();
}

}  // namespace

TEST_CASE("a SentencePiece vocabulary: user-defined tokens always, control tokens only when parsed", "[tokenizer]") {
  const auto tok = small_spm();
  const int user = tok.find("<|user|>"), start = tok.find("<|im_start|>"), sp = tok.find(" ");
  REQUIRE(user == 5);
  REQUIRE(start == 3);
  // User-defined: matched whole even without special parsing; the text after it gets a
  // space prefix, as after any special token.
  const auto a = tok.encode("hi<|user|>hi", true, false, false);
  CHECK(a == std::vector<int>{1, tok.find(" hi"), user, tok.find(" hi")});
  // Control tokens: text unless parsed.
  const auto b = tok.encode("<|im_start|>hi", false, false, true);
  CHECK(b == std::vector<int>{start, tok.find(" hi")});
  const auto c = tok.encode("<|im_start|>", false, false, false);
  CHECK(std::find(c.begin(), c.end(), start) == c.end());
  // Bytes of a character the vocabulary lacks: the <0xXX> tokens; decoding gives them back.
  const auto d = tok.encode("h\xc3\xa9", false, false, false);
  REQUIRE(d.size() == 4);
  CHECK(d[0] == sp);
  CHECK(tok.type(d[2]) == lw::TokenType::byte);
  std::string back;
  for (std::size_t i = 1; i < d.size(); ++i) back += tok.decode(d[i - 1], d[i]);
  CHECK(back == "h\xc3\xa9");
  // Decoding: control prints nothing, user-defined as written, normal with spaces.
  CHECK(tok.decode(0, start).empty());
  CHECK(tok.decode(0, user) == "<|user|>");
  CHECK(tok.decode(0, tok.find(" hi")) == " hi");
  CHECK(tok.decode(1, tok.find(" hi")) == "hi");  // after BOS the leading space goes
  // Whitespace runs and newlines: each space is the marker token, "\n" its own.
  CHECK(tok.encode("a  \nb", false, false, false) ==
        std::vector<int>{sp, tok.find("a"), sp, sp, tok.find("\n"), tok.find("b")});
}

TEST_CASE("a vocabulary with bad ids or types is refused", "[tokenizer]") {
  lw::Vocab v;
  v.kind = lw::VocabKind::spm;
  v.pieces = {"<unk>", "<s>", "</s>", "<0x41>x"};
  v.scores = {0, 0, 0, 0};
  v.types = {lw::TokenType::unknown, lw::TokenType::control, lw::TokenType::control, lw::TokenType::byte};
  CHECK(lw::Tokenizer::from_vocab(v, "v").error().message.find("not <0xXX>") != std::string::npos);
  v.types[3] = lw::TokenType::normal;
  v.special.eos = 9;
  CHECK(lw::Tokenizer::from_vocab(v, "v").error().message.find("EOS id 9") != std::string::npos);
  v.special.eos = 2;
  v.scores.pop_back();
  CHECK(!lw::Tokenizer::from_vocab(v, "v").has_value());
}

TEST_CASE("chat templates are recognised from the Jinja text models ship", "[chat]") {
  // The distinctive parts of the templates of the model families (paraphrased).
  CHECK(lw::detect_chat_format("{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content + ' [/INST]' }}"
                               "{% elif message['role'] == 'system' %}{{ '<<SYS>>\\n' + content + '\\n<</SYS>>\\n\\n' }}") ==
        lw::ChatFormat::llama2);
  CHECK(lw::detect_chat_format("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + "
                               "m['content'] + ' [/INST]' }}{% else %}{{ m['content'] + eos_token }}{% endif %}") ==
        lw::ChatFormat::mistral);
  CHECK(lw::detect_chat_format("{% if message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + eos_token }}"
                               "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\\n' + message['content'] }}") ==
        lw::ChatFormat::zephyr);
  CHECK(lw::detect_chat_format("{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + "
                               "'<|im_end|>' + '\\n'}}{% endfor %}") == lw::ChatFormat::chatml);
  CHECK(lw::detect_chat_format("{{ system }}\\n\\nUSER: {{ user }}\\nASSISTANT: {{ reply }}</s>") == lw::ChatFormat::vicuna);
  CHECK(!lw::detect_chat_format("{{ '### Instruction: ' + content }}").has_value());
  lw::Vocab v;
  v.chat_template = "{{ '### Instruction: ' + content }}";
  const auto c = lw::choose_chat_format(v, "");
  CHECK(c.warn);
  CHECK(c.format == lw::kDefaultChatFormat);
  CHECK(lw::choose_chat_format(v, "chatml").format == lw::ChatFormat::chatml);
  v.chat_template.clear();
  CHECK(!lw::choose_chat_format(v, "").warn);
}

TEST_CASE("every template renders a conversation as the concatenation of its turns", "[chat]") {
  const auto tok = small_spm();
  const std::vector<lw::ChatMessage> convo{{"system", "be hi"}, {"user", "hi"}, {"assistant", "hi hi"}, {"user", "a"}};
  for (const char* name : {"llama2", "mistral", "zephyr", "chatml", "vicuna"}) {
    INFO(name);
    const lw::ChatTemplate t(*lw::chat_format_by_name(name));
    const auto whole = lw::encode_segments(tok, t.render(convo, true));
    // What a client keeping the conversation sends: turn 1, the reply, its end token, turn 2.
    lw::ChatSegments first = t.opening("be hi", true);
    const auto u1 = t.user("hi", t.folds_system() ? "be hi" : "");
    first.insert(first.end(), u1.begin(), u1.end());
    const auto rp = t.reply_prefix();
    first.insert(first.end(), rp.begin(), rp.end());
    std::vector<int> inc = lw::encode_segments(tok, first);
    // The reply's end token (the model samples it; the session has not cached it yet).
    const int end = lw::end_of_turn_id(tok, t) >= 0 ? lw::end_of_turn_id(tok, t) : tok.eos_id();
    lw::ChatSegments second = t.after_reply();
    const auto u2 = t.user("a", "");
    second.insert(second.end(), u2.begin(), u2.end());
    second.insert(second.end(), rp.begin(), rp.end());
    const auto rest = lw::encode_segments(tok, second);
    // The whole rendering starts with turn 1 and ends with turn 2's tokens.
    REQUIRE(whole.size() > inc.size() + rest.size());
    CHECK(std::equal(inc.begin(), inc.end(), whole.begin()));
    CHECK(std::equal(rest.rbegin(), rest.rend(), whole.rbegin()));
    // Between them: the reply's text and the end token.
    CHECK(whole[whole.size() - rest.size() - 1] == end);
  }
  // ChatML's end of turn is its own token when the vocabulary has it.
  CHECK(lw::end_of_turn_id(tok, lw::ChatTemplate(lw::ChatFormat::chatml)) == tok.find("<|im_end|>"));
  CHECK(lw::end_of_turn_id(tok, lw::ChatTemplate(lw::ChatFormat::zephyr)) == -1);
}

namespace {

// The three kinds of vocabulary a server meets: llama2.c's tokenizer.bin, a GGUF
// SentencePiece vocabulary (32000 pieces) and Llama-3's byte-level BPE.
std::vector<std::pair<std::string, lw::Tokenizer>> real_tokenizers() {
  std::vector<std::pair<std::string, lw::Tokenizer>> out;
  out.emplace_back("tok512.bin", lw::Tokenizer::load((t::models_dir() / "tok512.bin").string(), 512).value());
  for (const auto& path : {t::models_dir() / "gguf" / "vocab32k-q8_0.gguf", t::llama3_vocab_gguf()}) {
    const auto bytes = t::read_bytes(path);
    auto g = lw::GgufFile::parse(bytes, path.filename().string()).value();
    out.emplace_back(path.filename().string(),
                     lw::Tokenizer::from_vocab(lw::read_gguf_vocab(g, 0).value(), path.filename().string()).value());
  }
  return out;
}

}  // namespace

// The HTTP chat API is stateless: each turn re-sends the whole history. Its prompt's tokens
// must begin with the last turn's prompt tokens, or the prefix cache could not attach them.
TEST_CASE("each turn's rendered history begins with the last turn's prompt, token for token", "[chat][prefix]") {
  LW_REQUIRE_SHARED();
  const char* users[] = {"Tell me about the dream you had, with the sky and the hills.", "What did the trees look like?",
                         "And then? Say more (numbers: 12345, code: f(x) = y;)", "Thanks!\n\nBye."};
  const char* replies[] = {"Sure. The sky was blue, and the wind blew over the hills.",
                           "They were tall, green and old: 3 oaks and 2 pines.",
                           "Then a door opened into a quiet room.\nIt was empty.", "Goodbye!"};
  for (const auto& [name, tok] : real_tokenizers()) {
    for (const auto f : {lw::ChatFormat::llama2, lw::ChatFormat::mistral, lw::ChatFormat::zephyr, lw::ChatFormat::chatml,
                         lw::ChatFormat::vicuna, lw::ChatFormat::llama3}) {
      const lw::ChatTemplate tmpl(f);
      INFO(name << ", " << tmpl.name());
      std::vector<lw::ChatMessage> msgs{{"system", "You are a dreamer."}};
      std::vector<int> last;
      for (int turn = 0; turn < 4; ++turn) {
        msgs.push_back({"user", users[turn]});
        const auto prompt = lw::encode_segments(tok, tmpl.render(msgs, tok.add_bos()));
        INFO("turn " << turn);
        REQUIRE(prompt.size() > last.size());
        CHECK(std::equal(last.begin(), last.end(), prompt.begin()));
        // The reply as the server returns it: the text of the tokens generated after the
        // prompt (which begins with a space where the format's prompt ends in a word).
        const bool space = f == lw::ChatFormat::llama2 || f == lw::ChatFormat::mistral || f == lw::ChatFormat::vicuna;
        msgs.push_back({"assistant", std::string(space ? " " : "") + replies[turn]});
        last = prompt;
      }
    }
  }
}

// A Llama-3-shaped GGUF file (the real byte-level BPE vocabulary, tied embeddings, RoPE
// frequency factors) served end to end: the CLI in both sampling modes, the load tester,
// HTTP chat with the Llama-3 template, the 1.3 vocabulary download and what older clients
// are told.
#include "common/chat_template.hpp"
#include "common/messages.hpp"
#include "common/tokenizer.hpp"
#include "tests/http_client.hpp"
#include "tests/raw_socket.hpp"
#include "tests/server_process.hpp"
#include "tests/support.hpp"

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <algorithm>

namespace lw = llamawire;
namespace t = llamawire::test;
namespace json = boost::json;

namespace {

void append(std::vector<int>& to, const std::vector<int>& from) { to.insert(to.end(), from.begin(), from.end()); }

}  // namespace

TEST_CASE("a Llama-3-shaped GGUF serves the CLI in both modes, the load tester and HTTP chat with its template",
          "[net][llama3][slow]") {
  t::ServerProcess server({"-c", t::llama3_model("q8_0").string(), "--http-port", "0", "--threads", "2"});
  CHECK(server.log().find("chat template llama3 (recognised in tokenizer.chat_template)") != std::string::npos);

  // The vocabulary as a 1.3 client receives it: byte-level BPE with its merges.
  auto vm = t::fetch_vocab_message(server);
  CHECK(vm.chat_template == "llama3");
  CHECK(vm.vocab.kind == lw::VocabKind::bpe);
  CHECK(vm.vocab.pre == "llama-bpe");
  CHECK(vm.vocab.merges.size() == 280147u);
  const lw::Tokenizer tok = lw::Tokenizer::from_vocab(std::move(vm.vocab), "server").value();
  CHECK(tok.special().ends_turn(128001));  // <|end_of_text|>
  CHECK(tok.special().ends_turn(128009));  // <|eot_id|>

  // The CLI, server-side and client-side sampling: the same text, greedy and sampled; the
  // load tester.
  const std::string prompt = "Hello, world! 你好 😀 it's 2024";
  t::check_cli_both_modes(server, prompt, 40);
  t::check_load_tester(server, prompt);

  // HTTP chat renders Meta's template exactly: BOS, then per message
  // <|start_header_id|>role<|end_header_id|>\n\n + trimmed content + <|eot_id|>, then the
  // assistant header. The user's "<|eot_id|>" stays text.
  const std::string user = "  Say <|eot_id|> now ";
  std::vector<int> want{128000, 128006};
  append(want, tok.encode("system", false, false));
  want.push_back(128007);
  append(want, tok.encode("\n\nBe brief.", false, false));
  append(want, {128009, 128006});
  append(want, tok.encode("user", false, false));
  want.push_back(128007);
  append(want, tok.encode("\n\nSay <|eot_id|> now", false, false));
  append(want, {128009, 128006});
  append(want, tok.encode("assistant", false, false));
  want.push_back(128007);
  append(want, tok.encode("\n\n", false, false));
  const lw::ChatTemplate tmpl(lw::ChatFormat::llama3);
  const std::vector<lw::ChatMessage> msgs{{"system", "Be brief."}, {"user", user}};
  CHECK(lw::encode_segments(tok, tmpl.render(msgs, tok.add_bos())) == want);
  CHECK(std::count(want.begin(), want.end(), 128009) == 2);
  json::array messages{json::object{{"role", "system"}, {"content", "Be brief."}}, json::object{{"role", "user"}, {"content", user}}};
  json::object req{{"messages", messages}, {"max_tokens", 6}, {"temperature", 0}};
  const auto res = t::http_request(server.http_port(), "POST", "/v1/chat/completions", json::serialize(req));
  INFO(res.body);
  REQUIRE(res.status == 200);
  CHECK(json::parse(res.body).at("usage").at("prompt_tokens").to_number<int>() == static_cast<int>(want.size()));

  // Generation ends at <|eot_id|> and <|end_of_text|> (not at other control tokens). This
  // random-weight model repeats its last token, so a prompt ending in one (a raw prompt
  // parses special-token text) makes it the first token drawn.
  for (const auto& [tail, stops] : {std::pair{"<|eot_id|>", true}, {"<|end_of_text|>", true}, {"<|start_header_id|>", false}}) {
    INFO(tail);
    json::object c{{"prompt", std::string("Hello ") + tail}, {"max_tokens", 8}, {"temperature", 0}};
    const auto r = t::http_request(server.http_port(), "POST", "/v1/completions", json::serialize(c));
    REQUIRE(r.status == 200);
    const auto body = json::parse(r.body);
    CHECK(body.at("choices").at(0).at("finish_reason").as_string() == (stops ? "stop" : "length"));
    CHECK(body.at("usage").at("completion_tokens").to_number<int>() == (stops ? 0 : 8));
    for (const bool client_sampling : {false, true}) {
      std::vector<std::string> args{"-n", "20", "-t", "0", "-i", std::string("Hello ") + tail};
      if (client_sampling) args.push_back("--client-sampling");
      const auto cli = t::run_client(server, args);
      CHECK(cli.exit_code == 0);
      CHECK(cli.out == "Hello \n");  // control tokens print nothing
      if (stops) CHECK(cli.err.find(" 0 tokens") != std::string::npos);
    }
  }

  // The CLI's chat, both modes, two turns, the same text.
  const std::string input = "Hello there\nand again\n";
  const auto a = t::run_client(server, {"-m", "chat", "-y", "Be brief.", "-t", "0", "-n", "120"}, input);
  const auto b = t::run_client(server, {"-m", "chat", "-y", "Be brief.", "-t", "0", "-n", "120", "--client-sampling"}, input);
  INFO(a.err);
  CHECK((a.exit_code == 0 || a.exit_code == 5));
  CHECK(a.exit_code == b.exit_code);
  CHECK(a.out == b.out);
  CHECK(server.stop() == 0);
}

TEST_CASE("a client older than 1.3 is told that a BPE vocabulary needs 1.3, and keeps its session", "[net][llama3]") {
  t::ServerProcess server({"-c", t::llama3_model("q8_0").string()});
  t::RawSocket sock(server.port());
  REQUIRE(sock.send(lw::msg::Hello{1, 2, "", "client-1.2"}, 1));
  REQUIRE(sock.receive().has_value());
  for (const lw::Message& m : {lw::Message{lw::msg::GetVocab{}}, lw::Message{lw::msg::GetTokenizer{}}}) {
    REQUIRE(sock.send(m, 2));
    const auto r = sock.receive();
    REQUIRE(r.has_value());
    const auto* e = std::get_if<lw::msg::Error>(&r->second);
    REQUIRE(e != nullptr);
    CHECK(lw::from_wire(e->code) == lw::errc::unsupported);
    CHECK(e->fatal == 0);
    CHECK(e->message.find("byte-level BPE") != std::string::npos);
  }
  REQUIRE(sock.send(lw::msg::Ping{42}, 3));
  const auto p = sock.receive();
  REQUIRE(p.has_value());
  CHECK(std::holds_alternative<lw::msg::Pong>(p->second));
  CHECK(server.stop() == 0);
}

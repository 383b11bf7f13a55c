// End to end, the OpenAI-compatible API's fields (issue 22): structured output, the
// samplers, and the rule that no field is silently ignored.
#include "common/tokenizer.hpp"
#include "tests/http_client.hpp"
#include "tests/raw_socket.hpp"
#include "tests/server_process.hpp"

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <algorithm>
#include <fstream>

namespace t = llamawire::test;
namespace json = boost::json;

namespace {

std::string aidreams() { return (t::models_dir() / "aidreams260K.bin").string(); }
std::string tok512() { return (t::models_dir() / "tok512.bin").string(); }

struct Reply {
  int status = 0;
  json::object body;
};

Reply post(const t::ServerProcess& s, const char* path, const json::object& body) {
  const auto r = t::http_request(s.http_port(), "POST", path, json::serialize(body), {{"Content-Type", "application/json"}});
  Reply out;
  out.status = r.status;
  boost::system::error_code ec;
  const auto v = json::parse(r.body, ec);
  if (!ec && v.is_object()) out.body = v.as_object();
  return out;
}

std::string text_of(const Reply& r) {
  const auto& c = r.body.at("choices").at(0).as_object();
  if (const auto* m = c.if_contains("message")) return std::string(m->at("content").as_string());
  return std::string(c.at("text").as_string());
}

std::string error_code(const Reply& r) {
  const auto* e = r.body.if_contains("error");
  if (e == nullptr || e->at("code").is_null()) return {};
  return std::string(e->at("code").as_string());
}
std::string error_message(const Reply& r) {
  const auto* e = r.body.if_contains("error");
  return e == nullptr ? std::string() : std::string(e->at("message").as_string());
}

// The greedy completion of "I dreamed", 4 tokens.
std::string greedy_of(const t::ServerProcess& s) {
  const auto r = t::http_request(s.http_port(), "POST", "/v1/completions", R"({"prompt":"I dreamed","max_tokens":4,"temperature":0})");
  return std::string(json::parse(r.body).at("choices").at(0).at("text").as_string());
}

json::object chat(const char* content) {
  return json::object{{"messages", json::array{json::object{{"role", "user"}, {"content", content}}}}};
}

}  // namespace

TEST_CASE("http: a JSON Schema response_format gives JSON that validates, even from the 260K model",
          "[net][http][grammar]") {
  LW_REQUIRE_SHARED();
  t::ServerProcess server({"-c", aidreams(), "-z", tok512(), "--http-port", "0"});
  const auto schema = json::parse(R"({"type":"object","properties":{
      "title":{"type":"string","maxLength":10},"mood":{"enum":["calm","wild"]},"n":{"type":"integer"},
      "tags":{"type":"array","items":{"type":"string","maxLength":5},"maxItems":2}},
    "required":["title","mood","n"],"additionalProperties":false})");
  int valid = 0;
  for (int seed = 1; seed <= 8; ++seed) {
    INFO("seed " << seed);
    auto body = chat("Describe a dream as JSON");
    body["max_tokens"] = 90;
    body["temperature"] = 0.8;
    body["seed"] = seed;
    body["response_format"] = json::object{
        {"type", "json_schema"}, {"json_schema", json::object{{"name", "dream"}, {"strict", true}, {"schema", schema}}}};
    const auto r = post(server, "/v1/chat/completions", body);
    REQUIRE(r.status == 200);
    const std::string text = text_of(r);
    INFO(text);
    CHECK(r.body.at("choices").at(0).at("finish_reason") == "stop");
    boost::system::error_code ec;
    const auto v = json::parse(text, ec);
    REQUIRE_FALSE(ec);
    const auto& o = v.as_object();
    CHECK(o.size() <= 4);
    CHECK(o.at("title").is_string());
    CHECK((o.at("mood") == "calm" || o.at("mood") == "wild"));
    CHECK(o.at("n").is_int64());
    if (const auto* tags = o.if_contains("tags")) CHECK(tags->as_array().size() <= 2);
    ++valid;
  }
  CHECK(valid == 8);
  // json_object: any JSON object.
  auto body = chat("Say something as JSON");
  body["max_tokens"] = 90;
  body["seed"] = 3;
  body["response_format"] = json::object{{"type", "json_object"}};
  const auto obj = post(server, "/v1/chat/completions", body);
  REQUIRE(obj.status == 200);
  if (obj.body.at("choices").at(0).at("finish_reason") == "stop") {
    boost::system::error_code ec;
    CHECK(json::parse(text_of(obj), ec).is_object());
  }
  CHECK(server.stop() == 0);
}

TEST_CASE("http: a GBNF grammar constrains completions; a bad grammar or schema is a 400 saying why",
          "[net][http][grammar]") {
  LW_REQUIRE_SHARED();
  t::ServerProcess server({"-c", aidreams(), "-z", tok512(), "--http-port", "0"});
  for (int seed = 1; seed <= 4; ++seed) {
    const auto r = post(server, "/v1/completions",
                        json::object{{"prompt", "I dreamed"}, {"max_tokens", 40}, {"seed", seed}, {"temperature", 0.7},
                                     {"grammar", R"(root ::= (" " [a-z]+){3} ".")"}});
    REQUIRE(r.status == 200);
    const std::string text = text_of(r);
    INFO(text);
    CHECK(r.body.at("choices").at(0).at("finish_reason") == "stop");
    REQUIRE(!text.empty());
    CHECK(text.back() == '.');
    int words = 0;
    for (std::size_t i = 0; i + 1 < text.size(); ++i) {
      CHECK(((text[i] >= 'a' && text[i] <= 'z') || text[i] == ' '));
      if (text[i] == ' ') ++words;
    }
    CHECK(words == 3);
  }
  const auto bad_grammar = post(server, "/v1/completions", json::object{{"prompt", "x"}, {"grammar", "root ::= [a-"}});
  CHECK(bad_grammar.status == 400);
  CHECK(error_message(bad_grammar).find("grammar") != std::string::npos);
  CHECK(error_message(bad_grammar).find("line 1") != std::string::npos);
  const auto bad_schema = post(
      server, "/v1/completions",
      json::object{{"prompt", "x"},
                   {"response_format", json::object{{"type", "json_schema"},
                                                    {"json_schema", json::object{{"schema", json::parse(R"({"type":"string","pattern":"a+"})")}}}}}});
  CHECK(bad_schema.status == 400);
  CHECK(error_message(bad_schema).find("pattern is not supported") != std::string::npos);
  const auto both = post(server, "/v1/completions",
                         json::object{{"prompt", "x"}, {"grammar", "root ::= \"a\""}, {"response_format", json::object{{"type", "json_object"}}}});
  CHECK(both.status == 400);
  CHECK(server.stop() == 0);
}

TEST_CASE("http: every OpenAI field is implemented or refused as unsupported_parameter, never ignored",
          "[net][http]") {
  LW_REQUIRE_SHARED();
  t::ServerProcess server({"-c", aidreams(), "-z", tok512(), "--http-port", "0"});
  // Asked for and not implemented: a 400 naming the field.
  for (const auto& [path, field, value] : std::vector<std::tuple<const char*, const char*, json::value>>{
           {"/v1/completions", "best_of", 3},
           {"/v1/completions", "suffix", "end"},
           {"/v1/chat/completions", "functions", json::parse(R"([{"name":"f"}])")},
           {"/v1/chat/completions", "tools", json::parse(R"([{"type":"custom","custom":{"name":"f"}}])")},
           {"/v1/chat/completions", "stream_options", json::parse(R"({"include_obfuscation":true})")},
           {"/v1/chat/completions", "audio", json::parse(R"({"voice":"x"})")}}) {
    INFO(path << " " << field);
    auto body = std::string(path).find("chat") != std::string::npos ? chat("hi") : json::object{{"prompt", "hi"}};
    body[field] = value;
    const auto r = post(server, path, body);
    CHECK(r.status == 400);
    CHECK(error_code(r) == "unsupported_parameter");
    CHECK(error_message(r).find(std::string("'") + field) != std::string::npos);
  }
  // The same fields asking for nothing, fields with no effect on the output, and fields the
  // API does not define: answered.
  auto body = chat("hi");
  body["max_tokens"] = 3;
  body["logprobs"] = false;
  body["n"] = 1;
  body["tools"] = json::array{};
  body["stream_options"] = nullptr;
  body["user"] = "someone";
  body["some_field_of_another_api"] = 42;
  CHECK(post(server, "/v1/chat/completions", body).status == 200);
  // Content parts and the developer role are chat as usual.
  auto plain = chat("Tell me a dream");
  plain["max_tokens"] = 8;
  plain["temperature"] = 0;
  plain["messages"].as_array().insert(plain["messages"].as_array().begin(),
                                      json::object{{"role", "system"}, {"content", "You dream."}});
  auto parts = plain;
  parts["messages"].as_array()[1].as_object()["content"] =
      json::array{json::object{{"type", "text"}, {"text", "Tell me a dream"}}};
  parts["messages"].as_array()[0].as_object()["role"] = "developer";
  const auto a = post(server, "/v1/chat/completions", plain);
  const auto b = post(server, "/v1/chat/completions", parts);
  REQUIRE(a.status == 200);
  REQUIRE(b.status == 200);
  CHECK(text_of(a) == text_of(b));
  CHECK(a.body.at("usage").at("prompt_tokens") == b.body.at("usage").at("prompt_tokens"));
  auto image = chat("x");
  image["messages"].as_array()[0].as_object()["content"] =
      json::array{json::object{{"type", "image_url"}, {"image_url", json::object{{"url", "data:"}}}}};
  const auto img = post(server, "/v1/chat/completions", image);
  CHECK(img.status == 400);
  CHECK(error_code(img) == "unsupported_parameter");
  CHECK(error_message(img).find("image_url") != std::string::npos);
  // Range errors name the range in plain numbers.
  const auto hot = post(server, "/v1/completions", json::object{{"prompt", "x"}, {"temperature", 2000}});
  CHECK(hot.status == 400);
  CHECK(error_message(hot).find("[0, 100] (got 2000)") != std::string::npos);
  // max_tokens past what the context leaves is clamped to it (128 positions, a 4-token prompt).
  const auto big = post(server, "/v1/completions",
                        json::object{{"prompt", "I dreamed"}, {"max_tokens", 100000}, {"temperature", 0}});
  REQUIRE(big.status == 200);
  CHECK(big.body.at("usage").at("completion_tokens").to_number<int>() <= 128);
  CHECK(server.stop() == 0);
}

TEST_CASE("http: the samplers: top_p 0, top_k 1 and min_p 1 are greedy; logit_bias bans; penalties act",
          "[net][http]") {
  LW_REQUIRE_SHARED();
  t::ServerProcess server({"-c", aidreams(), "-z", tok512(), "--http-port", "0"});
  auto completion = [&](json::object extra) {
    json::object body{{"prompt", "I dreamed"}, {"max_tokens", 40}, {"seed", 9}};
    for (const auto& [k, v] : extra) body[k] = v;
    const auto r = post(server, "/v1/completions", body);
    INFO(json::serialize(r.body));
    REQUIRE(r.status == 200);
    return text_of(r);
  };
  const std::string greedy = completion({{"temperature", 0}});
  const std::string sampled = completion({{"temperature", 1.0}, {"top_p", 1.0}});
  REQUIRE(greedy != sampled);
  CHECK(completion({{"temperature", 1.0}, {"top_p", 0}}) == greedy);
  CHECK(completion({{"temperature", 1.0}, {"top_p", 1.0}, {"top_k", 1}}) == greedy);
  CHECK(completion({{"temperature", 1.0}, {"top_p", 1.0}, {"min_p", 1.0}}) == greedy);
  // The defaults are the plain draw: the same text as without the fields.
  CHECK(completion({{"temperature", 1.0}, {"top_p", 1.0}, {"top_k", 0}, {"min_p", 0}, {"repeat_penalty", 1.0},
                    {"presence_penalty", 0}, {"frequency_penalty", 0}}) == sampled);
  // Banning the greedy text's first token (found by its text) gives another text; <unk>,
  // never drawn anyway, changes nothing.
  const std::string first = completion({{"temperature", 0}, {"max_tokens", 1}});
  const auto tok = llamawire::Tokenizer::load(tok512(), 512);
  REQUIRE(tok.has_value());
  int first_id = -1;
  for (int id = 0; id < 512; ++id) {
    if (tok->decode(5, id) == first) first_id = id;
  }
  REQUIRE(first_id >= 0);
  const std::string banned = completion({{"temperature", 0}, {"logit_bias", json::object{{std::to_string(first_id), -100}}}});
  CHECK(banned != greedy);
  CHECK(banned.rfind(first, 0) != 0);
  CHECK(completion({{"temperature", 0}, {"logit_bias", json::object{{"0", -100}}}}) == greedy);
  // Penalties against repeating: the greedy text repeats itself over 40 tokens; penalized, it is another.
  CHECK(completion({{"temperature", 0}, {"frequency_penalty", 2.0}}) != greedy);
  CHECK(completion({{"temperature", 0}, {"presence_penalty", 2.0}}) != greedy);
  CHECK(completion({{"temperature", 0}, {"repeat_penalty", 1.5}}) != greedy);
  // Bad values are refused with their range.
  const auto r = post(server, "/v1/completions", json::object{{"prompt", "x"}, {"logit_bias", json::object{{"99999", 1}}}});
  CHECK(r.status == 400);
  CHECK(error_message(r).find("not a token id") != std::string::npos);
  CHECK(post(server, "/v1/completions", json::object{{"prompt", "x"}, {"top_k", -1}}).status == 400);
  CHECK(post(server, "/v1/completions", json::object{{"prompt", "x"}, {"min_p", 2}}).status == 400);
  CHECK(server.stop() == 0);
}

TEST_CASE("http: Expect 100-continue, CORS, paths without /v1, a lower-case bearer, a 413 that arrives",
          "[net][http]") {
  LW_REQUIRE_SHARED();
  t::ServerProcess server({"-c", aidreams(), "-z", tok512(), "--http-port", "0", "--api-key", "k", "--cors-origin",
                           "http://app.example"});
  const int hp = server.http_port();
  // Expect: 100-continue is answered before the body is sent.
  {
    t::RawSocket s(hp, 3000);
    const std::string body = R"({"prompt":"I dreamed","max_tokens":2})";
    REQUIRE(s.send_text("POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Type: "
                        "application/json\r\nExpect: 100-continue\r\nContent-Length: " +
                        std::to_string(body.size()) + "\r\n\r\n"));
    const std::string interim = s.read_some();
    CHECK(interim.rfind("HTTP/1.1 100 Continue\r\n\r\n", 0) == 0);
    REQUIRE(s.send_text(body));
    const std::string reply = s.read_some();
    CHECK(reply.find("HTTP/1.1 200 OK") != std::string::npos);
  }
  // Lower-case scheme, and llama.cpp's paths without /v1.
  CHECK(t::http_request(hp, "GET", "/models", "", {{"Authorization", "bearer k"}}).status == 200);
  CHECK(t::http_request(hp, "POST", "/completions", R"({"prompt":"I dreamed","max_tokens":2})",
                        {{"Authorization", "BEARER k"}})
            .status == 200);
  CHECK(t::http_request(hp, "POST", "/chat/completions",
                        R"({"messages":[{"role":"user","content":"hi"}],"max_tokens":2})", {{"Authorization", "Bearer k"}})
            .status == 200);
  // CORS: the preflight needs no key; an allowed origin gets the headers, another none.
  const auto pre = t::http_request(hp, "OPTIONS", "/v1/chat/completions", "",
                                   {{"Origin", "http://app.example"}, {"Access-Control-Request-Method", "POST"},
                                    {"Access-Control-Request-Headers", "authorization,content-type"}});
  CHECK(pre.status == 204);
  CHECK(pre.headers.at("Access-Control-Allow-Origin") == "http://app.example");
  CHECK(pre.headers.at("Access-Control-Allow-Headers") == "authorization,content-type");
  CHECK(pre.headers.at("Access-Control-Allow-Methods").find("POST") != std::string::npos);
  const auto ok = t::http_request(hp, "GET", "/v1/models", "", {{"Origin", "http://app.example"}, {"Authorization", "Bearer k"}});
  CHECK(ok.headers.at("Access-Control-Allow-Origin") == "http://app.example");
  const auto other = t::http_request(hp, "GET", "/v1/models", "", {{"Origin", "http://evil.example"}, {"Authorization", "Bearer k"}});
  CHECK(other.headers.count("Access-Control-Allow-Origin") == 0);
  // A 2 MiB body past the 1 MiB limit: the 413 reaches the client (the server reads the
  // rest away instead of resetting the connection under it).
  {
    t::RawSocket s(hp, 10000);
    const std::size_t n = 2u << 20;
    std::string req = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Length: " +
                      std::to_string(n) + "\r\n\r\n";
    req += std::string(n, 'a');
    CHECK(s.send_text(req));
    const std::string reply = s.read_some();
    CHECK(reply.rfind("HTTP/1.1 413", 0) == 0);
  }
  CHECK(server.stop() == 0);
}

TEST_CASE("http: stream_options.include_usage, /tokenize, /detokenize and /props", "[net][http]") {
  LW_REQUIRE_SHARED();
  t::ServerProcess server({"-c", aidreams(), "-z", tok512(), "--http-port", "0"});
  const int hp = server.http_port();
  // The last chunk before [DONE] has no choices and the usage.
  const auto sse = t::http_request(hp, "POST", "/v1/chat/completions",
                                   R"({"messages":[{"role":"user","content":"hi"}],"max_tokens":4,"stream":true,)"
                                   R"("stream_options":{"include_usage":true}})");
  REQUIRE(sse.status == 200);
  std::vector<json::object> chunks;
  for (std::size_t p = 0; (p = sse.body.find("data: {", p)) != std::string::npos; ++p) {
    const auto end = sse.body.find("\n\n", p);
    chunks.push_back(json::parse(sse.body.substr(p + 6, end - p - 6)).as_object());
  }
  REQUIRE(chunks.size() >= 3);
  CHECK(chunks.back().at("choices").as_array().empty());
  CHECK(chunks.back().at("usage").at("completion_tokens").to_number<int>() >= 1);
  CHECK(chunks.back().at("object") == "chat.completion.chunk");
  CHECK(sse.body.find("data: [DONE]") == sse.body.size() - std::string("data: [DONE]\n\n").size());
  // Tokenize and back.
  const auto tk = t::http_request(hp, "POST", "/tokenize", R"({"content":"I dreamed of hills","add_special":true})");
  REQUIRE(tk.status == 200);
  const auto ids = json::parse(tk.body).at("tokens").as_array();
  REQUIRE(ids.size() > 2);
  CHECK(ids[0] == 1);  // BOS
  const auto dt = t::http_request(hp, "POST", "/detokenize", json::serialize(json::object{{"tokens", ids}}));
  REQUIRE(dt.status == 200);
  CHECK(json::parse(dt.body).at("content") == "I dreamed of hills");
  const auto pieces = t::http_request(hp, "POST", "/tokenize", R"({"content":"I dreamed","with_pieces":true})");
  CHECK(json::parse(pieces.body).at("tokens").at(0).as_object().contains("piece"));
  CHECK(t::http_request(hp, "POST", "/detokenize", R"({"tokens":[99999]})").status == 400);
  CHECK(t::http_request(hp, "POST", "/tokenize", R"({"text":"x"})").status == 400);
  const auto props = json::parse(t::http_request(hp, "GET", "/props").body).as_object();
  CHECK(props.at("n_ctx") == 128);
  CHECK(props.at("chat_template") == "llama2");
  CHECK(props.at("model") == "aidreams260K.bin");
  CHECK(server.stop() == 0);
}

TEST_CASE("http: logprobs are the log-softmax of the logits the sampler saw, streamed or not; echo", "[net][http]") {
  LW_REQUIRE_SHARED();
  t::ServerProcess server({"-c", aidreams(), "-z", tok512(), "--http-port", "0"});
  const int hp = server.http_port();
  const auto tok = llamawire::Tokenizer::load(tok512(), 512);
  REQUIRE(tok.has_value());
  // Greedy, 6 tokens, 3 alternatives each.
  const auto r = post(server, "/v1/completions",
                      json::object{{"prompt", "I dreamed"}, {"max_tokens", 6}, {"temperature", 0}, {"logprobs", 3}});
  REQUIRE(r.status == 200);
  const auto& lp = r.body.at("choices").at(0).at("logprobs").as_object();
  const auto& tokens = lp.at("tokens").as_array();
  REQUIRE(tokens.size() == 6);
  // Against FORWARD's logits of the same positions (the binary protocol, same server).
  std::vector<std::uint32_t> seq;
  for (const int id : tok->encode("I dreamed", true, false)) seq.push_back(static_cast<std::uint32_t>(id));
  std::string text;
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    t::RawSocket s(server.port());
    REQUIRE(s.handshake());
    const auto logits = t::forward_on(s, llamawire::msg::Forward{0, seq}, 1);
    REQUIRE(logits);
    const auto& v = logits->values;
    const double m = *std::max_element(v.begin(), v.end());
    double sum = 0;
    for (const float x : v) sum += std::exp(static_cast<double>(x) - m);
    const int best = static_cast<int>(std::max_element(v.begin(), v.end()) - v.begin());
    const double expect = static_cast<double>(v[static_cast<std::size_t>(best)]) - m - std::log(sum);
    INFO("token " << i);
    CHECK(std::abs(lp.at("token_logprobs").at(i).to_number<double>() - expect) < 1e-5);
    const auto& top = lp.at("top_logprobs").at(i).as_object();
    CHECK(top.size() == 3);
    CHECK(std::abs(top.at(tokens[i].as_string()).to_number<double>() - expect) < 1e-5);  // greedy: the best
    for (const auto& [k, x] : top) CHECK(x.to_number<double>() <= expect + 1e-6);
    CHECK(lp.at("text_offset").at(i).to_number<std::size_t>() == text.size());
    text += tokens[i].as_string();
    seq.push_back(static_cast<std::uint32_t>(best));
  }
  CHECK(text == text_of(r));
  // Streamed: the same entries, spread over the chunks.
  const auto sse = t::http_request(hp, "POST", "/v1/chat/completions",
                                   R"({"messages":[{"role":"user","content":"hi"}],"max_tokens":5,"temperature":0,)"
                                   R"("logprobs":true,"top_logprobs":2,"stream":true})");
  const auto plain = post(server, "/v1/chat/completions",
                          json::parse(R"({"messages":[{"role":"user","content":"hi"}],"max_tokens":5,"temperature":0,)"
                                      R"("logprobs":true,"top_logprobs":2})").as_object());
  json::array streamed;
  for (std::size_t p = 0; (p = sse.body.find("data: {", p)) != std::string::npos; ++p) {
    const auto end = sse.body.find("\n\n", p);
    const auto c = json::parse(sse.body.substr(p + 6, end - p - 6)).as_object();
    const auto& ch = c.at("choices").as_array();
    if (ch.empty() || !ch[0].as_object().contains("logprobs") || ch[0].at("logprobs").is_null()) continue;
    for (const auto& e : ch[0].at("logprobs").at("content").as_array()) streamed.push_back(e);
  }
  const auto& whole = plain.body.at("choices").at(0).at("logprobs").at("content").as_array();
  REQUIRE(whole.size() == 5);
  CHECK(json::serialize(streamed) == json::serialize(whole));
  CHECK(whole[0].at("top_logprobs").as_array().size() == 2);
  CHECK(whole[0].at("bytes").as_array().size() == whole[0].at("token").as_string().size());
  // top_logprobs needs logprobs; echo prepends the prompt.
  CHECK(post(server, "/v1/chat/completions", json::parse(R"({"messages":[{"role":"user","content":"hi"}],"top_logprobs":2})").as_object()).status == 400);
  const auto echo = post(server, "/v1/completions", json::object{{"prompt", "I dreamed"}, {"max_tokens", 4}, {"temperature", 0}, {"echo", true}});
  CHECK(text_of(echo) == "I dreamed" + greedy_of(server));
  CHECK(server.stop() == 0);
}

TEST_CASE("cli: --grammar, --json-schema, --top-k, --min-p and --repeat-penalty sample on the client", "[net][client]") {
  LW_REQUIRE_SHARED();
  t::ServerProcess server({"-c", aidreams(), "-z", tok512()});
  t::TempDir dir;
  const auto gbnf = (dir / "g.gbnf").string();
  std::ofstream(gbnf) << "root ::= (\" \" [a-z]+){4} \".\"\n";
  const auto schema = (dir / "s.json").string();
  std::ofstream(schema) << R"({"type":"object","properties":{"mood":{"enum":["calm","wild"]},"n":{"type":"integer"}},)"
                           R"("required":["mood","n"],"additionalProperties":false})";
  for (const char* seed : {"1", "2", "3"}) {
    const auto g = t::run_client(server, {"-i", "I dreamed", "--grammar", gbnf, "-s", seed, "-n", "100"});
    INFO(g.out << g.err);
    CHECK(g.exit_code == 0);
    REQUIRE(g.out.rfind("I dreamed ", 0) == 0);
    const std::string rest = g.out.substr(9, g.out.size() - 10);  // without the prompt and the newline
    CHECK(std::count(rest.begin(), rest.end(), ' ') == 4);
    CHECK(rest.back() == '.');
    const auto j = t::run_client(server, {"-i", "JSON:", "--json-schema", schema, "-s", seed, "-n", "120"});
    INFO(j.out << j.err);
    CHECK(j.exit_code == 0);
    const auto v = json::parse(j.out.substr(5)).as_object();
    CHECK((v.at("mood") == "calm" || v.at("mood") == "wild"));
    CHECK(v.at("n").is_int64());
  }
  // top-k 1 and min-p 1 are greedy; a repeat penalty changes the text.
  const auto greedy = t::run_client(server, {"-i", "I dreamed", "-t", "0", "-n", "40"});
  CHECK(t::run_client(server, {"-i", "I dreamed", "--top-k", "1", "-s", "4", "-n", "40"}).out == greedy.out);
  CHECK(t::run_client(server, {"-i", "I dreamed", "--min-p", "1", "-s", "4", "-n", "40"}).out == greedy.out);
  CHECK(t::run_client(server, {"-i", "I dreamed", "-t", "0", "--repeat-penalty", "1.5", "-n", "40"}).out != greedy.out);
  // Bad files and values: exit 2 with the reason.
  const auto bad = t::run_client(server, {"--grammar", (dir / "missing").string()});
  CHECK(bad.exit_code == 2);
  CHECK(bad.err.find("cannot be read") != std::string::npos);
  std::ofstream(dir / "bad.gbnf") << "root ::= [a-";
  const auto unparsable = t::run_client(server, {"--grammar", (dir / "bad.gbnf").string()});
  CHECK(unparsable.exit_code == 2);
  CHECK(unparsable.err.find("grammar") != std::string::npos);
  CHECK(t::run_client(server, {"--top-k", "-1"}).exit_code == 2);
  CHECK(server.stop() == 0);
}

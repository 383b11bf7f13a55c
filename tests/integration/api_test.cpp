// End to end, the OpenAI-compatible API's fields (issue 22): structured output, the
// samplers, and the rule that no field is silently ignored.
#include "common/tokenizer.hpp"
#include "tests/http_client.hpp"
#include "tests/raw_socket.hpp"
#include "tests/server_process.hpp"

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <thread>
#include <map>
#include <set>

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

TEST_CASE("cli: --grammar, --json-schema, --top-k, --min-p and --repeat-penalty: sampled by the server (1.5), the same on the client",
          "[net][client]") {
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
    // The server's sampler (GENERATE's 1.5 extension) and the client's draw the same.
    CHECK(t::run_client(server, {"-i", "I dreamed", "--grammar", gbnf, "-s", seed, "-n", "100", "--client-sampling"}).out == g.out);
    CHECK(t::run_client(server, {"-i", "JSON:", "--json-schema", schema, "-s", seed, "-n", "120", "--client-sampling"}).out == j.out);
    const std::vector<std::string> samplers{"-i", "I dreamed", "--top-k", "5", "--min-p", "0.05", "--repeat-penalty", "1.3",
                                            "-s", seed, "-n", "60"};
    auto client_side = samplers;
    client_side.push_back("--client-sampling");
    CHECK(t::run_client(server, samplers).out == t::run_client(server, client_side).out);
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

namespace {

// A streamed reply's JSON chunks.
std::vector<json::object> sse_chunks(const std::string& body) {
  std::vector<json::object> chunks;
  for (std::size_t p = 0; (p = body.find("data: {", p)) != std::string::npos; ++p) {
    const auto end = body.find("\n\n", p);
    chunks.push_back(json::parse(body.substr(p + 6, end - p - 6)).as_object());
  }
  return chunks;
}

const char* kWeatherTools = R"([
  {"type":"function","function":{"name":"get_weather","description":"The weather in a city",
   "parameters":{"type":"object","properties":{"city":{"type":"string","maxLength":20},"days":{"type":"integer"},
                 "unit":{"enum":["C","F"]}},"required":["city","unit"],"additionalProperties":false}}},
  {"type":"function","function":{"name":"get_time","parameters":{"type":"object","properties":{},
   "additionalProperties":false}}}])";

// The arguments follow get_weather's schema.
void check_weather_args(const std::string& arguments) {
  INFO(arguments);
  boost::system::error_code ec;
  const auto a = json::parse(arguments, ec);
  REQUIRE_FALSE(ec);
  REQUIRE(a.is_object());
  CHECK(a.at("city").is_string());
  const auto city = a.at("city").as_string();
  CHECK(std::count_if(city.begin(), city.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }) <= 20);
  CHECK((a.at("unit") == "C" || a.at("unit") == "F"));
  for (const auto& [k, v] : a.as_object()) CHECK((k == "city" || k == "unit" || (k == "days" && v.is_int64())));
}

}  // namespace

TEST_CASE("http: tools: required and named tool_choice give tool_calls that validate, streamed as the SDKs read them",
          "[net][http][tools]") {
  LW_REQUIRE_SHARED();
  t::TempDir dir;
  // The 32000-token vocabulary and a context that holds the tools' description.
  const auto model = t::make_model(dir, "m.bin", {64, 192, 2, 4, 4, 32000, 1024});
  t::ServerProcess server({"-c", model, "-z", (t::models_dir() / "tokenizer.bin").string(), "--http-port", "0"});
  auto request = [](std::uint64_t seed) {
    auto body = chat("What is the weather in Oslo?");
    body["tools"] = json::parse(kWeatherTools);
    body["tool_choice"] = json::parse(R"({"type":"function","function":{"name":"get_weather"}})");
    body["seed"] = seed;
    body["max_tokens"] = 120;
    return body;
  };
  for (std::uint64_t seed = 1; seed <= 4; ++seed) {
    INFO("seed " << seed);
    const auto r = post(server, "/v1/chat/completions", request(seed));
    REQUIRE(r.status == 200);
    const auto& choice = r.body.at("choices").at(0).as_object();
    const auto& msg = choice.at("message").as_object();
    // The schemas bound every string and number: a call always ends within max_tokens.
    CHECK(choice.at("finish_reason") == "tool_calls");
    CHECK(msg.at("content").is_null());
    const auto& calls = msg.at("tool_calls").as_array();
    REQUIRE(calls.size() >= 1);
    for (const auto& c : calls) {
      CHECK(c.at("type") == "function");
      CHECK(c.at("id").as_string().starts_with("call_"));
      CHECK(c.at("function").at("name") == "get_weather");
      check_weather_args(std::string(c.at("function").at("arguments").as_string()));
    }
    // Streamed: the same call, in a tool_calls delta with its index, id, name and arguments.
    auto streamed = request(seed);
    streamed["stream"] = true;
    const auto s = t::http_request(server.http_port(), "POST", "/v1/chat/completions", json::serialize(streamed));
    REQUIRE(s.status == 200);
    std::vector<json::object> got;
    std::string finish;
    for (const auto& ch : sse_chunks(s.body)) {
      for (const auto& c : ch.at("choices").as_array()) {
        const auto& d = c.at("delta").as_object();
        if (const auto* tc = d.if_contains("tool_calls")) {
          for (const auto& x : tc->as_array()) got.push_back(x.as_object());
        }
        if (const auto* content = d.if_contains("content"); content != nullptr && content->is_string()) {
          CHECK(content->as_string().empty());  // only the role chunk's
        }
        if (!c.at("finish_reason").is_null()) finish = std::string(c.at("finish_reason").as_string());
      }
    }
    CHECK(finish == "tool_calls");
    REQUIRE(got.size() == calls.size());
    for (std::size_t i = 0; i < got.size(); ++i) {
      CHECK(got[i].at("index") == static_cast<std::int64_t>(i));
      CHECK(got[i].at("id").as_string().starts_with("call_"));
      CHECK(got[i].at("function") == calls[i].at("function"));
    }
  }
  // required without parallel calls: exactly one call, and the reply ends with it.
  for (std::uint64_t seed = 1; seed <= 3; ++seed) {
    auto body = request(seed);
    body["tool_choice"] = "required";
    body["parallel_tool_calls"] = false;
    const auto r = post(server, "/v1/chat/completions", body);
    REQUIRE(r.status == 200);
    const auto& choice = r.body.at("choices").at(0).as_object();
    CHECK(choice.at("finish_reason") == "tool_calls");
    REQUIRE(choice.at("message").at("tool_calls").as_array().size() == 1);
    const auto& f = choice.at("message").at("tool_calls").at(0).at("function");
    if (f.at("name") == "get_weather") check_weather_args(std::string(f.at("arguments").as_string()));
    else CHECK(json::parse(f.at("arguments").as_string()) == json::object{});
  }
  // auto: a reply in plain text or calls; none: plain text, as without tools.
  auto body = request(5);
  body["tool_choice"] = "auto";
  CHECK(post(server, "/v1/chat/completions", body).status == 200);
  body["tool_choice"] = "none";
  body["temperature"] = 0;
  body["max_tokens"] = 12;
  auto without = body;
  without.erase("tools");
  without.erase("tool_choice");
  const auto a = post(server, "/v1/chat/completions", body);
  const auto b = post(server, "/v1/chat/completions", without);
  REQUIRE(a.status == 200);
  CHECK(text_of(a) == text_of(b));
  // The conversation goes on: the call and its result in the history.
  auto first = post(server, "/v1/chat/completions", request(1));
  REQUIRE(first.status == 200);
  auto turn = request(1);
  turn.erase("tool_choice");
  auto& msgs = turn["messages"].as_array();
  msgs.push_back(first.body.at("choices").at(0).at("message"));
  msgs.push_back(json::object{{"role", "tool"}, {"tool_call_id", "x"}, {"content", "12 C and windy"}});
  const auto second = post(server, "/v1/chat/completions", turn);
  CHECK(second.status == 200);
  CHECK(second.body.at("usage").at("prompt_tokens").to_number<int>() >
        first.body.at("usage").at("prompt_tokens").to_number<int>());
  CHECK(server.stop() == 0);
}

TEST_CASE("http: n choices: each is the single request with seed + i, batched, streamed by index", "[net][http]") {
  LW_REQUIRE_SHARED();
  t::ServerProcess server({"-c", aidreams(), "-z", tok512(), "--http-port", "0", "--max-sessions", "4"});
  json::object body{{"prompt", "I dreamed"}, {"max_tokens", 24}, {"temperature", 0.9}, {"seed", 40}, {"n", 3}};
  const auto r = post(server, "/v1/completions", body);
  REQUIRE(r.status == 200);
  const auto& choices = r.body.at("choices").as_array();
  REQUIRE(choices.size() == 3);
  int completion_tokens = 0;
  std::set<std::string> distinct;
  for (int i = 0; i < 3; ++i) {
    json::object one{{"prompt", "I dreamed"}, {"max_tokens", 24}, {"temperature", 0.9}, {"seed", 40 + i}};
    const auto single = post(server, "/v1/completions", one);
    REQUIRE(single.status == 200);
    CHECK(choices[static_cast<std::size_t>(i)].at("index") == i);
    CHECK(choices[static_cast<std::size_t>(i)].at("text") == single.body.at("choices").at(0).at("text"));
    completion_tokens += single.body.at("usage").at("completion_tokens").to_number<int>();
    distinct.insert(std::string(choices[static_cast<std::size_t>(i)].at("text").as_string()));
  }
  CHECK(distinct.size() > 1);
  CHECK(r.body.at("usage").at("completion_tokens").to_number<int>() == completion_tokens);
  // Streamed: chunks of every index, each index's text the same as the whole reply's.
  body["stream"] = true;
  const auto s = t::http_request(server.http_port(), "POST", "/v1/completions", json::serialize(body));
  REQUIRE(s.status == 200);
  std::map<std::int64_t, std::string> texts;
  std::map<std::int64_t, int> finishes;
  for (const auto& ch : sse_chunks(s.body)) {
    for (const auto& c : ch.at("choices").as_array()) {
      texts[c.at("index").as_int64()] += c.at("text").as_string();
      if (!c.at("finish_reason").is_null()) ++finishes[c.at("index").as_int64()];
    }
  }
  REQUIRE(texts.size() == 3);
  for (std::int64_t i = 0; i < 3; ++i) {
    CHECK(texts[i] == choices[static_cast<std::size_t>(i)].at("text").as_string());
    CHECK(finishes[i] == 1);
  }
  // Chat too; more choices than --max-sessions is refused.
  auto c = chat("Tell me a dream");
  c["n"] = 2;
  c["max_tokens"] = 8;
  const auto cr = post(server, "/v1/chat/completions", c);
  REQUIRE(cr.status == 200);
  CHECK(cr.body.at("choices").as_array().size() == 2);
  c["n"] = 5;
  const auto refused = post(server, "/v1/chat/completions", c);
  CHECK(refused.status == 400);
  CHECK(error_message(refused).find("--max-sessions") != std::string::npos);
  CHECK(server.stop() == 0);
}

TEST_CASE("http: embeddings are the normalized mean of the final hidden states, exact under load", "[net][http]") {
  LW_REQUIRE_SHARED();
  t::ServerProcess server({"-c", aidreams(), "-z", tok512(), "--http-port", "0"});
  const auto tok = llamawire::Tokenizer::load(tok512(), 512);
  REQUIRE(tok.has_value());
  // aidreams260K's classifier is its token embedding table E (dim 64, vocab 512), right
  // after the 7-int header: logits = E h for the final (normed) hidden state h.
  std::ifstream f(aidreams(), std::ios::binary);
  std::int32_t header[7];
  f.read(reinterpret_cast<char*>(header), sizeof header);
  const int dim = header[0], vocab = header[5];
  REQUIRE((dim == 64 && vocab == 512));
  std::vector<float> table(static_cast<std::size_t>(dim * vocab));
  f.read(reinterpret_cast<char*>(table.data()), static_cast<std::streamsize>(table.size() * sizeof(float)));
  REQUIRE(f);
  const std::string text = "I dreamed of hills and the wind";
  const auto r = post(server, "/v1/embeddings", json::object{{"input", text}, {"model", "x"}});
  REQUIRE(r.status == 200);
  CHECK(r.body.at("object") == "list");
  const auto& item = r.body.at("data").at(0).as_object();
  CHECK(item.at("object") == "embedding");
  CHECK(item.at("index") == 0);
  std::vector<double> e;
  for (const auto& x : item.at("embedding").as_array()) e.push_back(x.to_number<double>());
  REQUIRE(e.size() == 64u);
  double norm = 0;
  for (const double x : e) norm += x * x;
  CHECK(std::abs(norm - 1) < 1e-5);
  // The hidden states' sum, seen through the classifier: FORWARD's logits of every prefix
  // (causal: each prefix's last hidden state is the full input's at that position), summed,
  // point the same way as E e.
  std::vector<std::uint32_t> ids;
  for (const int id : tok->encode(text, true, false)) ids.push_back(static_cast<std::uint32_t>(id));
  CHECK(r.body.at("usage").at("prompt_tokens") == static_cast<std::int64_t>(ids.size()));
  std::vector<double> summed(512, 0.0);
  for (std::size_t k = 1; k <= ids.size(); ++k) {
    t::RawSocket s(server.port());
    REQUIRE(s.handshake());
    const auto logits = t::forward_on(s, llamawire::msg::Forward{0, std::vector<std::uint32_t>(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k))}, 1);
    REQUIRE(logits);
    for (std::size_t v = 0; v < 512; ++v) summed[v] += logits->values[v];
  }
  double dot = 0, n1 = 0, n2 = 0;
  for (std::size_t v = 0; v < 512; ++v) {
    double ee = 0;
    for (std::size_t i = 0; i < 64; ++i) ee += table[v * 64 + i] * e[i];
    dot += ee * summed[v];
    n1 += ee * ee;
    n2 += summed[v] * summed[v];
  }
  CHECK(dot / std::sqrt(n1 * n2) > 0.99999);
  // The same input among others, as token ids, in base64, and while generations run
  // beside it: the same floats, bit for bit.
  json::array many{"another input", text, json::array(ids.begin(), ids.end())};
  std::thread load([&] {
    for (int i = 0; i < 3; ++i) post(server, "/v1/completions", json::object{{"prompt", "I dreamed"}, {"max_tokens", 60}});
  });
  for (int round = 0; round < 3; ++round) {
    const auto b = post(server, "/v1/embeddings", json::object{{"input", many}});
    REQUIRE(b.status == 200);
    REQUIRE(b.body.at("data").as_array().size() == 3);
    CHECK(b.body.at("data").at(1).at("embedding") == item.at("embedding"));
    CHECK(b.body.at("data").at(2).at("embedding") == item.at("embedding"));
    CHECK(b.body.at("data").at(0).at("embedding") != item.at("embedding"));
  }
  load.join();
  const auto b64 = post(server, "/v1/embeddings", json::object{{"input", text}, {"encoding_format", "base64"}});
  REQUIRE(b64.status == 200);
  const std::string enc(b64.body.at("data").at(0).at("embedding").as_string());
  std::string bytes;
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (std::size_t i = 0; i + 3 < enc.size() + 0 && i < enc.size(); i += 4) {
    std::uint32_t v = 0;
    int pad = 0;
    for (int j = 0; j < 4; ++j) {
      const char c = enc[i + static_cast<std::size_t>(j)];
      v = v << 6 | (c == '=' ? (++pad, 0u) : static_cast<std::uint32_t>(alphabet.find(c)));
    }
    bytes += static_cast<char>(v >> 16);
    if (pad < 2) bytes += static_cast<char>(v >> 8 & 255);
    if (pad < 1) bytes += static_cast<char>(v & 255);
  }
  REQUIRE(bytes.size() == 64 * sizeof(float));
  for (std::size_t i = 0; i < 64; ++i) {
    float x;
    std::memcpy(&x, bytes.data() + i * sizeof(float), sizeof x);
    CHECK(x == item.at("embedding").at(i).to_number<float>());
  }
  // Refused, saying why.
  for (const auto& bad : {json::object{{"input", ""}}, json::object{{"input", json::array{}}},
                          json::object{{"input", std::string(4000, 'a')}}, json::object{{"input", json::array{1, 9999}}},
                          json::object{{"input", "x"}, {"dimensions", 8}}, json::object{{"input", "x"}, {"encoding_format", "hex"}}}) {
    INFO(json::serialize(bad));
    const auto x = post(server, "/v1/embeddings", bad);
    CHECK(x.status == 400);
    CHECK_FALSE(error_message(x).empty());
  }
  CHECK(server.stop() == 0);
}

TEST_CASE("protocol 1.5: GENERATE's sampling extension: the HTTP samplers, a grammar, logprobs, refusals",
          "[net][protocol]") {
  LW_REQUIRE_SHARED();
  t::ServerProcess server({"-c", aidreams(), "-z", tok512(), "--http-port", "0"});
  const auto tok = llamawire::Tokenizer::load(tok512(), 512);
  REQUIRE(tok.has_value());
  std::vector<std::uint32_t> prompt;
  for (const int id : tok->encode("I dreamed", true, false)) prompt.push_back(static_cast<std::uint32_t>(id));
  auto text_of_tokens = [&](const std::vector<std::uint32_t>& ids) {
    std::string out;
    int prev = static_cast<int>(prompt.back());
    for (const auto id : ids) {
      out += llamawire::printable_piece(tok->decode(prev, static_cast<int>(id)));
      prev = static_cast<int>(id);
    }
    return out;
  };
  // The samplers: the same tokens as the HTTP API's with the same values and seed.
  for (const std::uint64_t seed : {5u, 6u}) {
    t::RawSocket s(server.port());
    REQUIRE(s.handshake());
    auto g = t::gen_request(0, prompt, 40, seed, 0.8f);
    g.flags = llamawire::kGenerateSampling;
    g.ext.top_k = 8;
    g.ext.min_p = 0.05f;
    g.ext.repeat_penalty = 1.2f;
    g.ext.repeat_last_n = 16;
    g.ext.presence_penalty = 0.5f;
    g.ext.frequency_penalty = 0.25f;
    g.ext.logit_bias = {{prompt.back(), -100.0f}};
    const auto bin = t::generate_on(s, g, 1);
    REQUIRE(bin.ok);
    const auto http = post(server, "/v1/completions",
                           json::object{{"prompt", "I dreamed"}, {"max_tokens", 40 - static_cast<int>(prompt.size()) + 1},
                                        {"temperature", 0.8}, {"top_p", 0.9}, {"seed", seed}, {"top_k", 8}, {"min_p", 0.05},
                                        {"repeat_penalty", 1.2}, {"repeat_last_n", 16}, {"presence_penalty", 0.5},
                                        {"frequency_penalty", 0.25},
                                        {"logit_bias", json::object{{std::to_string(prompt.back()), -100}}}});
    REQUIRE(http.status == 200);
    CHECK(text_of_tokens(bin.tokens) == text_of(http));
    CHECK(std::find(bin.tokens.begin(), bin.tokens.end(), prompt.back()) == bin.tokens.end());
  }
  // A grammar: the output stays in it, and END says it is complete.
  {
    t::RawSocket s(server.port());
    REQUIRE(s.handshake());
    auto g = t::gen_request(0, prompt, 100, 3);
    g.flags = llamawire::kGenerateSampling;
    g.ext.grammar = "root ::= (\" \" [a-z]+){3} \".\"";
    const auto bin = t::generate_on(s, g, 2);
    REQUIRE(bin.ok);
    CHECK(bin.end.reason == llamawire::StopReason::grammar);
    const auto text = text_of_tokens(bin.tokens);
    INFO(text);
    CHECK(std::count(text.begin(), text.end(), ' ') == 3);
    CHECK(text.back() == '.');
  }
  // Logprobs: TOKEN_LOGPROBS with the drawn token's log-softmax (greedy: the best) and the
  // alternatives, against FORWARD's logits.
  {
    t::RawSocket s(server.port());
    REQUIRE(s.handshake());
    auto g = t::gen_request(0, prompt, static_cast<std::uint32_t>(prompt.size()) + 3, 1, 0.0f);
    g.flags = llamawire::kGenerateSampling;
    g.ext.logprobs = 4;  // 3 alternatives
    const auto bin = t::generate_on(s, g, 3);
    REQUIRE(bin.ok);
    REQUIRE(bin.logprobs.size() == bin.tokens.size());
    REQUIRE(bin.tokens.size() == 4);
    std::vector<std::uint32_t> seq = prompt;
    for (const auto& lp : bin.logprobs) {
      t::RawSocket f(server.port());
      REQUIRE(f.handshake());
      const auto logits = t::forward_on(f, llamawire::msg::Forward{0, seq}, 1);
      REQUIRE(logits);
      const auto& v = logits->values;
      const double m = *std::max_element(v.begin(), v.end());
      double sum = 0;
      for (const float x : v) sum += std::exp(static_cast<double>(x) - m);
      CHECK(lp.token == static_cast<std::uint32_t>(std::max_element(v.begin(), v.end()) - v.begin()));
      CHECK(std::abs(lp.logprob - (static_cast<double>(v[lp.token]) - m - std::log(sum))) < 1e-5);
      REQUIRE(lp.top.size() == 3);
      CHECK(lp.top[0].first == lp.token);
      CHECK(lp.top[1].second <= lp.top[0].second);
      seq.push_back(lp.token);
    }
  }
  // Refused, the session kept: a grammar that does not parse, a bias token outside the
  // vocabulary, and the extension from a client that said 1.4.
  {
    t::RawSocket s(server.port());
    REQUIRE(s.handshake());
    auto g = t::gen_request(0, prompt, 20, 1);
    g.flags = llamawire::kGenerateSampling;
    g.ext.grammar = "root ::= [a-";
    auto r = t::generate_on(s, g, 4);
    CHECK_FALSE(r.ok);
    CHECK(r.error.find("grammar") != std::string::npos);
    g.ext.grammar.clear();
    g.ext.logit_bias = {{600, 1.0f}};
    r = t::generate_on(s, g, 5);
    CHECK_FALSE(r.ok);
    CHECK(r.error.find("logit_bias token 600") != std::string::npos);
    g.ext.logit_bias.clear();
    CHECK(t::generate_on(s, g, 6).ok);
  }
  {
    t::RawSocket s(server.port());
    REQUIRE(s.send(llamawire::msg::Hello{1, 4, "", "old-client"}, 1));
    const auto hello = s.receive();
    REQUIRE(hello);
    REQUIRE(std::holds_alternative<llamawire::msg::HelloOk>(hello->second));
    CHECK(std::get<llamawire::msg::HelloOk>(hello->second).minor == 5);
    auto g = t::gen_request(0, prompt, 20, 1);
    g.flags = llamawire::kGenerateSampling;
    const auto r = t::generate_on(s, g, 2);
    CHECK_FALSE(r.ok);
    CHECK(r.error.find("1.5") != std::string::npos);
    g.flags = 0;
    CHECK(t::generate_on(s, g, 3).ok);  // the session goes on
  }
  CHECK(server.stop() == 0);
}

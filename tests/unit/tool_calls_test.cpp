// Tool calling's pieces (server/net/tool_calls): the grammar of calls, the scan of a
// reply into content and calls, and the history's rendering.
#include "server/net/http_reply.hpp"
#include "server/net/http_request.hpp"
#include "server/net/tool_calls.hpp"

#include "common/grammar.hpp"
#include "common/tokenizer.hpp"
#include "tests/support.hpp"

#include <catch2/catch.hpp>

#include <boost/json.hpp>

namespace lw = llamawire;
namespace g = llamawire::grammar;
namespace t = llamawire::test;
namespace json = boost::json;

namespace {

const lw::Tokenizer& tok512() {
  static const lw::Tokenizer tok = lw::Tokenizer::load((t::models_dir() / "tok512.bin").string(), 512).value();
  return tok;
}

lw::ToolSpec weather_tools(lw::ToolSpec::Choice choice, bool parallel = true) {
  lw::ToolSpec s;
  s.functions.push_back({"get_weather", "The weather in a city",
                         json::parse(R"({"type":"object","properties":{"city":{"type":"string"},
                                         "unit":{"enum":["C","F"]}},"required":["city"],"additionalProperties":false})")});
  s.functions.push_back({"get_time", "", json::parse(R"({"type":"object","properties":{}})")});
  s.choice = choice;
  s.parallel = parallel;
  return s;
}

std::shared_ptr<g::CompiledGrammar> compile(const std::string& text) {
  auto rules = g::parse(text);
  INFO((rules ? std::string() : rules.error().message));
  REQUIRE(rules.has_value());
  return std::make_shared<g::CompiledGrammar>(std::move(*rules), std::make_shared<const g::TokenTrie>(tok512()));
}

bool matches(g::CompiledGrammar& gr, std::string_view text) {
  const auto s = gr.advance(gr.start(), text);
  return s != g::CompiledGrammar::kDead && gr.accepting(s);
}

}  // namespace

TEST_CASE("tools: the grammar admits calls of the offered functions with valid arguments, and nothing else",
          "[tools]") {
  const auto call = lw::tool_call_text("get_weather", R"({"city": "Oslo", "unit": "C"})");
  const auto bad_args = lw::tool_call_text("get_weather", R"({"unit": "C"})");  // city is required
  const auto other = lw::tool_call_text("get_time", "{}");
  const auto unknown = lw::tool_call_text("launch", "{}");
  {
    auto gr = compile(lw::tools_grammar(weather_tools(lw::ToolSpec::Choice::required)).value());
    CHECK(matches(*gr, call));
    CHECK(matches(*gr, other));
    CHECK(matches(*gr, call + "\n" + other));  // parallel calls
    CHECK_FALSE(matches(*gr, bad_args));
    CHECK_FALSE(matches(*gr, unknown));
    CHECK_FALSE(matches(*gr, "Hello"));
    CHECK_FALSE(matches(*gr, ""));
  }
  {
    auto gr = compile(lw::tools_grammar(weather_tools(lw::ToolSpec::Choice::required, false)).value());
    CHECK(matches(*gr, call));
    CHECK_FALSE(matches(*gr, call + "\n" + other));
    CHECK(gr->finished(gr->advance(gr->start(), call)));  // one call, and the reply is complete
  }
  {
    auto spec = weather_tools(lw::ToolSpec::Choice::named);
    spec.named = "get_time";
    auto gr = compile(lw::tools_grammar(spec).value());
    CHECK(matches(*gr, other));
    CHECK_FALSE(matches(*gr, call));
  }
  {
    auto gr = compile(lw::tools_grammar(weather_tools(lw::ToolSpec::Choice::automatic)).value());
    CHECK(matches(*gr, call));
    CHECK(matches(*gr, "It is sunny."));
    CHECK(matches(*gr, ""));
    CHECK_FALSE(matches(*gr, "<b>bold</b>"));  // a reply that begins with "<" is a call
  }
  CHECK(lw::tools_grammar(weather_tools(lw::ToolSpec::Choice::none)).value().empty());
  auto bad = weather_tools(lw::ToolSpec::Choice::required);
  bad.functions[0].parameters = json::parse(R"({"type":"object","properties":{"n":{"type":"integer","minimum":1}}})");
  const auto refused = lw::tools_grammar(bad);
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.error().message.find("get_weather") != std::string::npos);
  CHECK(refused.error().message.find("minimum") != std::string::npos);
  // The prompt offers each function as a JSON line.
  const auto prompt = lw::tools_prompt(weather_tools(lw::ToolSpec::Choice::automatic));
  CHECK(prompt.find(R"({"name":"get_weather","description":"The weather in a city","parameters":)") != std::string::npos);
  CHECK(prompt.find(R"({"name":"get_time","parameters":)") != std::string::npos);
}

TEST_CASE("tools: a reply splits into content and calls as it grows, a bad block stays text", "[tools]") {
  const auto spec = weather_tools(lw::ToolSpec::Choice::automatic);
  const std::string reply = "Let me look.\n" + lw::tool_call_text("get_weather", R"({"city": "Oslo"})") + "\n" +
                            lw::tool_call_text("get_time", "{}");
  // Fed a byte at a time, or whole: the same content and calls.
  for (const std::size_t step : {std::size_t{1}, std::size_t{7}, reply.size()}) {
    INFO("step " << step);
    lw::ToolCallScanner sc(spec, "call_1");
    std::string content;
    std::vector<lw::ToolCall> calls;
    for (std::size_t n = step;; n = std::min(reply.size(), n + step)) {
      auto u = sc.scan(std::string_view(reply).substr(0, n), n == reply.size());
      // Content never runs into a call's opening tag.
      CHECK(u.content.find('<') == std::string::npos);
      content += u.content;
      for (auto& c : u.calls) calls.push_back(c);
      if (n == reply.size()) break;
    }
    CHECK(content == "Let me look.");
    REQUIRE(calls.size() == 2);
    CHECK(calls[0].name == "get_weather");
    CHECK(calls[0].arguments == R"({"city": "Oslo"})");
    CHECK(calls[0].id == "call_1_0");
    CHECK(calls[1].name == "get_time");
    CHECK(calls[1].arguments == "{}");
    CHECK(calls[1].id == "call_1_1");
  }
  // Not a call: an unknown function, JSON that does not parse, a block never closed.
  for (const std::string& text : {lw::tool_call_text("launch", "{}"), std::string("<tool_call>\n{oops}\n</tool_call>"),
                                 std::string("x <tool_call>\n{\"name\": \"get_time\"")}) {
    lw::ToolCallScanner sc(spec, "c");
    auto u = sc.scan(text, true);
    CHECK(u.calls.empty());
    CHECK(u.content == text);
  }
  // Written another way (spaces, arguments as a string): still a call, arguments as JSON.
  lw::ToolCallScanner sc(spec, "c");
  auto u = sc.scan(R"(<tool_call>{ "arguments": {"city":"Rome"}, "name": "get_weather" }</tool_call>)", true);
  REQUIRE(u.calls.size() == 1);
  CHECK(json::parse(u.calls[0].arguments) == json::parse(R"({"city":"Rome"})"));
  CHECK(u.content.empty());
}

TEST_CASE("tools: the history renders assistant tool_calls and tool results into the template", "[tools]") {
  const lw::ChatTemplate tmpl(lw::ChatFormat::chatml);
  auto parse = [&](const std::string& body) {
    auto r = lw::parse_generation_request(true, body, tok512(), tmpl, 100000);
    if (auto* e = std::get_if<lw::HttpError>(&r)) FAIL(e->message);
    return std::get<lw::GenRequest>(r);
  };
  const auto with_calls = parse(R"({"messages":[
      {"role":"user","content":"Weather?"},
      {"role":"assistant","content":null,"tool_calls":[
         {"id":"c1","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Oslo\"}"}},
         {"id":"c2","type":"function","function":{"name":"get_time","arguments":"{}"}}]},
      {"role":"tool","tool_call_id":"c1","content":"12 C"},
      {"role":"tool","tool_call_id":"c2","content":"noon"}]})");
  // The same conversation written out as plain messages.
  const std::string calls = lw::tool_call_text("get_weather", R"({"city": "Oslo"})") + "\n" + lw::tool_call_text("get_time", "{}");
  json::array plain{json::object{{"role", "user"}, {"content", "Weather?"}},
                    json::object{{"role", "assistant"}, {"content", calls}},
                    json::object{{"role", "user"}, {"content", lw::tool_response_text("12 C") + "\n" + lw::tool_response_text("noon")}}};
  const auto written = parse(json::serialize(json::object{{"messages", plain}}));
  CHECK(with_calls.prompt == written.prompt);
  // With tools offered: the system prompt gains their description, the grammar is set.
  const auto offered = parse(R"({"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}],
      "tools":[{"type":"function","function":{"name":"get_time"}}],"tool_choice":"required"})");
  CHECK(offered.tools.choice == lw::ToolSpec::Choice::required);
  CHECK_FALSE(offered.grammar.empty());
  const auto none = parse(R"({"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}],
      "tools":[{"type":"function","function":{"name":"get_time"}}],"tool_choice":"none"})");
  CHECK(none.grammar.empty());
  CHECK(offered.prompt.size() > none.prompt.size() + 20);
  // Refused, saying why.
  for (const char* body : {
           R"({"messages":[{"role":"user","content":"x"}],"tool_choice":"required"})",
           R"({"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"a"}}],
               "tool_choice":{"type":"function","function":{"name":"b"}}})",
           R"({"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"a b"}}]})",
           R"({"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"a"}},
               {"type":"function","function":{"name":"a"}}]})",
           R"({"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"a"}}],
               "response_format":{"type":"json_object"}})",
           R"({"messages":[{"role":"user","content":"x","tool_calls":[]},{"role":"user","content":"y",
               "tool_calls":[{"function":{"name":"a"}}]}]})"}) {
    INFO(body);
    auto r = lw::parse_generation_request(true, body, tok512(), tmpl, 100000);
    CHECK(std::holds_alternative<lw::HttpError>(r));
  }
}

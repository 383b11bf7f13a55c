// libFuzzer: HTTP request handling: Beast's parser with the server's limits, then the
// API's JSON request validation for every endpoint, and the scan of a reply for tool calls.
#include "common/tokenizer.hpp"
#include "server/net/http_request.hpp"
#include "server/net/tool_calls.hpp"

#include <boost/json.hpp>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

namespace {

const llamawire::Tokenizer& tokenizer() {
  // A small vocabulary: the three specials, a space and the printable ASCII bytes.
  static const llamawire::Tokenizer tok = [] {
    std::vector<std::uint8_t> b;
    auto put = [&](const void* p, std::size_t n) {
      b.insert(b.end(), static_cast<const std::uint8_t*>(p), static_cast<const std::uint8_t*>(p) + n);
    };
    const std::int32_t max_len = 8;
    put(&max_len, 4);
    std::vector<std::string> pieces{"<unk>", "<s>", "</s>", " "};
    for (char c = 33; c < 127; ++c) pieces.emplace_back(1, c);
    for (const auto& p : pieces) {
      const float score = 0;
      const auto len = static_cast<std::int32_t>(p.size());
      put(&score, 4);
      put(&len, 4);
      put(p.data(), p.size());
    }
    return llamawire::Tokenizer::parse(b, "fuzz tokenizer").value();
  }();
  return tok;
}

const llamawire::ChatTemplate& chat() {
  static const llamawire::ChatTemplate t(llamawire::kDefaultChatFormat);
  return t;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace http = boost::beast::http;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  // The body alone, against both endpoints.
  (void)llamawire::parse_generation_request(false, input, tokenizer(), chat(), 128);
  (void)llamawire::parse_generation_request(true, input, tokenizer(), chat(), 128);
  (void)llamawire::tokenize_request(input, tokenizer());
  (void)llamawire::detokenize_request(input, tokenizer());
  (void)llamawire::parse_embedding_request(input, tokenizer(), 128);
  // The input as a model's reply with tools offered, arriving in two parts.
  static const llamawire::ToolSpec spec = [] {
    llamawire::ToolSpec t;
    t.functions.push_back({"f", "", boost::json::parse(R"({"type":"object","properties":{"a":{"type":"string"}}})")});
    t.choice = llamawire::ToolSpec::Choice::automatic;
    return t;
  }();
  llamawire::ToolCallScanner scanner(spec, "call");
  (void)scanner.scan(input.substr(0, size / 2), false);
  (void)scanner.scan(input, true);
  // A whole request through the parser, as the server configures it.
  http::request_parser<http::string_body> parser;
  parser.body_limit(1 << 16);
  parser.header_limit(16 * 1024);
  parser.eager(true);
  boost::beast::error_code ec;
  parser.put(boost::asio::buffer(data, size), ec);
  if (!ec && parser.is_done()) {
    const auto& req = parser.get();
    (void)llamawire::parse_generation_request(req.target() == "/v1/chat/completions", req.body(), tokenizer(), chat(), 128);
  }
  return 0;
}

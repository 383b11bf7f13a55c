// UTF-8 boundaries and escapes (common/utf8), and the log's use of them against forged lines.
#include "common/log.hpp"
#include "common/utf8.hpp"
#include "tests/support.hpp"

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <fstream>
#include <sstream>

namespace lw = llamawire;
namespace u = llamawire::utf8;

TEST_CASE("utf8 sequence lengths reject malformed, overlong and surrogate forms", "[utf8]") {
  CHECK(u::sequence_length("a") == 1);
  CHECK(u::sequence_length("\xC3\xA9") == 2);          // é
  CHECK(u::sequence_length("\xE6\x97\xA5") == 3);      // 日
  CHECK(u::sequence_length("\xF0\x9F\x98\x80") == 4);  // 😀
  CHECK(u::sequence_length("\xC0\xAF") == 0);          // overlong '/'
  CHECK(u::sequence_length("\xE0\x80\xAF") == 0);      // overlong
  CHECK(u::sequence_length("\xED\xA0\x80") == 0);      // surrogate
  CHECK(u::sequence_length("\xF4\x90\x80\x80") == 0);  // past U+10FFFF
  CHECK(u::sequence_length("\xFF") == 0);
  CHECK(u::sequence_length("\x80") == 0);
  CHECK(u::sequence_length("\xE6\x97") == 0);  // cut short
}

TEST_CASE("utf8 incomplete tails and cut points never split a character", "[utf8]") {
  const std::string s = "e\xC2\xB0\xE6\x97\xA5";  // e ° 日
  CHECK(u::incomplete_tail(s) == 0);
  CHECK(u::incomplete_tail(s.substr(0, 2)) == 1);
  CHECK(u::incomplete_tail(s.substr(0, 4)) == 1);
  CHECK(u::incomplete_tail(s.substr(0, 5)) == 2);
  CHECK(u::incomplete_tail("a\xFF") == 0);      // invalid, not incomplete: nothing to wait for
  CHECK(u::incomplete_tail("a\xE6\x41") == 0);  // a broken sequence is not held back
  for (std::size_t limit = 0; limit <= s.size() + 2; ++limit) {
    const std::size_t b = u::boundary_at_or_before(s, limit);
    INFO("limit " << limit);
    CHECK(b <= limit);
    CHECK((b == 0 || b == 1 || b == 3 || b == 6));
  }
  CHECK(u::boundary_at_or_before(s, 2) == 1);
  CHECK(u::boundary_at_or_before(s, 5) == 3);
}

TEST_CASE("utf8 sanitize replaces only malformed bytes", "[utf8]") {
  CHECK(u::sanitize("ok \xE6\x97\xA5") == "ok \xE6\x97\xA5");
  CHECK(u::sanitize("a\xFF" "b") == "a\xEF\xBF\xBD" "b");
  CHECK(u::sanitize("\xE6\x97") == "\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST_CASE("log escapes peer strings: no forged line, valid UTF-8 JSON", "[utf8][log]") {
  CHECK(u::escape_for_log("x\"\n2099 error FORGED", true) == "x\\\"\\n2099 error FORGED");
  CHECK(u::escape_for_log("\xFF\xFE", false) == "\\xff\\xfe");
  CHECK(u::escape_for_log("a\x1b[31m\xC2\x85", false) == "a\\x1b[31m\\xc2\\x85");
  CHECK(u::escape_for_log("\xE6\x97\xA5 ok", false) == "\xE6\x97\xA5 ok");

  lw::test::TempDir dir;
  const auto path = (dir / "log.txt").string();
  REQUIRE(lw::log::set_file(path));
  lw::log::set_format(lw::log::Format::text);
  lw::log::info("hello client=", lw::log::quoted("x\"\n2099-01-01T00:00:00.000Z error FORGED"));
  lw::log::set_format(lw::log::Format::json);
  lw::log::info("hello client=", lw::log::quoted("\xFF\xFE\n"));
  lw::log::set_format(lw::log::Format::text);
  REQUIRE(lw::log::set_file(""));
  std::ifstream in(path);
  std::string line;
  std::vector<std::string> lines;
  while (std::getline(in, line)) lines.push_back(line);
  REQUIRE(lines.size() == 2);
  CHECK(lines[0].find("hello client=\"x\\\"\\n2099-01-01T00:00:00.000Z error FORGED\"") != std::string::npos);
  CHECK(u::sanitize(lines[1]) == lines[1]);
  const auto o = boost::json::parse(lines[1]).as_object();
  CHECK(o.at("msg").as_string() == "hello client=\"\\xff\\xfe\\n\"");
}

// Whole-session transcripts (proto-spec/transcripts/*.jsonl): every frame a client sends
// and every frame the server must send back, from the handshake to the last END, byte for
// byte, for a server started as the transcript's header says. The test replays each one
// against a real server; LW_RECORD_TRANSCRIPTS=1 writes them anew from the server's
// answers (then read the diff before committing it: a change is a protocol change).
#include "tests/raw_socket.hpp"
#include "tests/server_process.hpp"
#include "tests/support.hpp"

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>

namespace t = llamawire::test;
namespace lw = llamawire;
namespace json = boost::json;

namespace {

std::string to_hex(const std::vector<std::uint8_t>& b) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (const auto c : b) {
    s.push_back(d[c >> 4]);
    s.push_back(d[c & 15]);
  }
  return s;
}

std::vector<std::uint8_t> from_hex(std::string_view s) {
  std::vector<std::uint8_t> out;
  for (std::size_t i = 0; i + 1 < s.size(); i += 2) out.push_back(static_cast<std::uint8_t>(std::stoi(std::string(s.substr(i, 2)), nullptr, 16)));
  return out;
}

// A reply that ends a request: after it the client sends its next frame.
bool ends_request(const lw::Message& m) {
  return std::holds_alternative<lw::msg::HelloOk>(m) || std::holds_alternative<lw::msg::End>(m) ||
         std::holds_alternative<lw::msg::Ok>(m) || std::holds_alternative<lw::msg::Pong>(m) ||
         std::holds_alternative<lw::msg::Error>(m) || std::holds_alternative<lw::msg::Logits>(m);
}

lw::msg::Generate generate(std::uint32_t start, std::uint32_t limit, float temperature, float topp,
                           std::uint64_t seed, std::uint32_t flags, std::vector<std::uint32_t> tokens) {
  lw::msg::Generate g;
  g.start_pos = start;
  g.limit_pos = limit;
  g.temperature = temperature;
  g.topp = topp;
  g.seed = seed;
  g.flags = flags;
  g.tokens = std::move(tokens);
  return g;
}

// The client's side of a transcript: next(last reply) gives the next frame to send (with
// its request id), or nothing when the session is over. It may use the server's last
// answer (a follow-up GENERATE starts where END says).
struct Script {
  std::string name;
  std::string about;
  std::function<std::optional<std::pair<lw::Message, std::uint32_t>>(int step, const lw::Message* last)> next;
};

std::vector<Script> scripts() {
  const lw::msg::Hello hello{lw::kProtocolMajor, lw::kProtocolMinor, "", "transcript"};
  std::vector<Script> out;
  out.push_back({"T01-greedy-generate-rewind",
                 "HELLO; a greedy GENERATE of a 4-token prompt to position 24; RESET to 5; a GENERATE continuing at "
                 "5 to 12; PING",
                 [hello](int step, const lw::Message* last) -> std::optional<std::pair<lw::Message, std::uint32_t>> {
                   (void)last;
                   switch (step) {
                     case 0: return std::pair{lw::Message{hello}, 1u};
                     case 1: return std::pair{lw::Message{generate(0, 24, 0.0f, 0.9f, 1, 0, {1, 100, 200, 300})}, 2u};
                     case 2: return std::pair{lw::Message{lw::msg::Reset{5}}, 3u};
                     case 3: return std::pair{lw::Message{generate(5, 12, 0.0f, 0.9f, 1, 0, {411})}, 4u};
                     case 4: return std::pair{lw::Message{lw::msg::Ping{0x0123456789abcdefULL}}, 5u};
                     default: return std::nullopt;
                   }
                 }});
  out.push_back({"T02-sampled-generate-and-follow-up",
                 "HELLO; GENERATE sampled (temperature 0.8, top-p 0.9, seed 42, stop on EOS) to position 40; a "
                 "follow-up GENERATE from END's position with END's last token to 10 positions more",
                 [hello](int step, const lw::Message* last) -> std::optional<std::pair<lw::Message, std::uint32_t>> {
                   switch (step) {
                     case 0: return std::pair{lw::Message{hello}, 7u};
                     case 1:
                       return std::pair{lw::Message{generate(0, 40, 0.8f, 0.9f, 42, lw::kGenerateStopOnEos, {1, 65, 66})}, 8u};
                     case 2: {
                       const auto& e = std::get<lw::msg::End>(*last);
                       return std::pair{lw::Message{generate(e.position, e.position + 10, 0.8f, 0.9f, 43,
                                                             lw::kGenerateStopOnEos, {e.last_token})},
                                        9u};
                     }
                     default: return std::nullopt;
                   }
                 }});
  out.push_back({"T03-errors-keep-the-session",
                 "HELLO; FORWARD with a token out of range; RESET past the position; GENERATE with seed 0; a "
                 "second HELLO; then a GENERATE that works: every error but the last is not fatal",
                 [hello](int step, const lw::Message* last) -> std::optional<std::pair<lw::Message, std::uint32_t>> {
                   (void)last;
                   switch (step) {
                     case 0: return std::pair{lw::Message{hello}, 1u};
                     case 1: return std::pair{lw::Message{lw::msg::Forward{0, {1, 600}}}, 2u};
                     case 2: return std::pair{lw::Message{lw::msg::Reset{3}}, 3u};
                     case 3: return std::pair{lw::Message{generate(0, 8, 0.0f, 0.9f, 0, 0, {1})}, 4u};
                     case 4: return std::pair{lw::Message{hello}, 5u};
                     case 5: return std::pair{lw::Message{generate(0, 6, 0.0f, 0.9f, 1, 0, {1})}, 6u};
                     default: return std::nullopt;
                   }
                 }});
  return out;
}

const char* kServerArgs = "llamawire-server -c aidreams260K.bin -z tok512.bin (../shared/models; every other option default)";

}  // namespace

TEST_CASE("whole-session transcripts replay byte for byte against a real server", "[net][proto]") {
  LW_REQUIRE_SHARED();
  const std::filesystem::path dir = std::filesystem::path(LW_SOURCE_DIR) / "proto-spec" / "transcripts";
  const bool record = std::getenv("LW_RECORD_TRANSCRIPTS") != nullptr;
  for (const Script& sc : scripts()) {
    INFO(sc.name);
    t::ServerProcess server({"-c", (t::models_dir() / "aidreams260K.bin").string(), "-z",
                             (t::models_dir() / "tok512.bin").string()});
    t::RawSocket s(server.port());
    const auto path = dir / (sc.name + ".jsonl");
    if (record) {
      std::ofstream out(path);
      out << json::serialize(json::object{{"transcript", sc.name}, {"about", sc.about}, {"server", kServerArgs}}) << "\n";
      std::optional<lw::Message> last;
      for (int step = 0;; ++step) {
        const auto next = sc.next(step, last ? &*last : nullptr);
        if (!next) break;
        const auto frame = lw::encode_frame(next->first, next->second);
        out << json::serialize(json::object{{"dir", "client"}, {"type", lw::message_name(lw::message_type(next->first))},
                                            {"hex", to_hex(frame)}})
            << "\n";
        REQUIRE(s.send(frame));
        for (;;) {
          const auto r = s.receive();
          REQUIRE(r);
          out << json::serialize(json::object{{"dir", "server"}, {"type", lw::message_name(lw::message_type(r->second))},
                                              {"hex", to_hex(lw::encode_frame(r->second, r->first.request_id))}})
              << "\n";
          last = r->second;
          if (ends_request(r->second)) break;
        }
      }
      continue;
    }
    std::ifstream in(path);
    REQUIRE(in.good());  // a missing transcript fails: it is part of the spec
    std::string line;
    REQUIRE(std::getline(in, line));  // the header
    int frames = 0, from_server = 0;
    while (std::getline(in, line)) {
      const auto o = json::parse(line).as_object();
      const auto bytes = from_hex(o.at("hex").as_string());
      const std::string type(o.at("type").as_string());
      INFO("frame " << frames << " " << o.at("dir").as_string() << " " << type);
      if (o.at("dir").as_string() == "client") {
        REQUIRE(s.send(bytes));
      } else {
        const auto r = s.receive();
        REQUIRE(r);
        CHECK(lw::message_name(lw::message_type(r->second)) == type);
        if (const auto* e = std::get_if<lw::msg::Error>(&r->second)) {
          // An ERROR's text is for people: the code, the fatal flag and the request id are
          // the contract.
          const auto want = lw::decode_payload(bytes[3], std::span(bytes).subspan(lw::kFrameHeaderBytes));
          REQUIRE(want.has_value());
          const auto& we = std::get<lw::msg::Error>(*want);
          CHECK(e->code == we.code);
          CHECK(e->fatal == we.fatal);
          CHECK(r->first.request_id == lw::raw_request_id(std::span<const std::uint8_t, lw::kFrameHeaderBytes>(
                                           bytes.data(), lw::kFrameHeaderBytes)));
        } else {
          CHECK(to_hex(lw::encode_frame(r->second, r->first.request_id)) == to_hex(bytes));
        }
        ++from_server;
      }
      ++frames;
    }
    CHECK(from_server > 2);
    CHECK(server.stop() == 0);
  }
}

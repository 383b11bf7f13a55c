// Round-trips every proto-spec/vectors file through the codec.
#include "common/messages.hpp"
#include "common/overloaded.hpp"

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

namespace lw = llamawire;
namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

std::vector<std::uint8_t> read_hex(const fs::path& p) {
  std::ifstream in(p);
  std::vector<std::uint8_t> out;
  std::string tok;
  while (in >> tok) out.push_back(static_cast<std::uint8_t>(std::stoul(tok, nullptr, 16)));
  return out;
}

json::array to_array(const std::vector<std::uint32_t>& v) {
  json::array a;
  for (auto x : v) a.emplace_back(x);
  return a;
}

std::string hex(const std::vector<std::uint8_t>& b) {
  std::string s;
  char buf[3];
  for (auto c : b) {
    std::snprintf(buf, sizeof buf, "%02x", c);
    s += buf;
  }
  return s;
}

json::object fields_of(const lw::Message& m) {
  return std::visit(
      lw::Overloaded{
          [](const lw::msg::Hello& h) {
            return json::object{{"major", h.major}, {"minor", h.minor}, {"api_key", h.api_key}, {"client_name", h.client_name}};
          },
          [](const lw::msg::GetTokenizer&) { return json::object{}; },
          [](const lw::msg::Forward& f) { return json::object{{"start_pos", f.start_pos}, {"tokens", to_array(f.tokens)}}; },
          [](const lw::msg::Generate& g) {
            json::object o{{"start_pos", g.start_pos}, {"limit_pos", g.limit_pos}, {"temperature", g.temperature},
                           {"topp", g.topp}, {"seed", g.seed}, {"flags", g.flags}, {"tokens", to_array(g.tokens)}};
            if ((g.flags & lw::kGenerateSampling) != 0) {
              const auto& x = g.ext;
              json::array bias;
              for (const auto& [t, b] : x.logit_bias) bias.push_back(json::array{t, b});
              o["sampling"] = json::object{{"top_k", x.top_k},
                                           {"min_p", x.min_p},
                                           {"repeat_penalty", x.repeat_penalty},
                                           {"repeat_last_n", x.repeat_last_n},
                                           {"presence_penalty", x.presence_penalty},
                                           {"frequency_penalty", x.frequency_penalty},
                                           {"logit_bias", bias},
                                           {"grammar", x.grammar},
                                           {"logprobs", x.logprobs}};
            }
            return o;
          },
          [](const lw::msg::Reset& r) { return json::object{{"position", r.position}}; },
          [](const lw::msg::Cancel&) { return json::object{}; },
          [](const lw::msg::Ping& p) { return json::object{{"nonce", p.nonce}}; },
          [](const lw::msg::Stats&) { return json::object{}; },
          [](const lw::msg::HelloOk& h) {
            return json::object{{"major", h.major},           {"minor", h.minor},
                                {"dim", h.dim},               {"hidden_dim", h.hidden_dim},
                                {"n_layers", h.n_layers},     {"n_heads", h.n_heads},
                                {"n_kv_heads", h.n_kv_heads}, {"vocab_size", h.vocab_size},
                                {"seq_len", h.seq_len},       {"context", h.context},
                                {"max_frame_bytes", h.max_frame_bytes}, {"tokenizer_bytes", h.tokenizer_bytes},
                                {"weights", h.weights},       {"model_name", h.model_name}};
          },
          [](const lw::msg::Tokenizer& t) { return json::object{{"bytes", hex(t.bytes)}}; },
          [](const lw::msg::Logits& l) {
            json::array a;
            for (float v : l.values) a.emplace_back(v);
            return json::object{{"pos", l.pos}, {"values", a}};
          },
          [](const lw::msg::Token& t) { return json::object{{"token", t.token}}; },
          [](const lw::msg::TokenLogprobs& t) {
            json::array top;
            for (const auto& [id, v] : t.top) top.push_back(json::array{id, v});
            return json::object{{"token", t.token}, {"logprob", t.logprob}, {"top", top}};
          },
          [](const lw::msg::End& e) {
            return json::object{{"reason", lw::stop_reason_name(e.reason)}, {"prompt_tokens", e.prompt_tokens},
                                {"generated_tokens", e.generated_tokens}, {"position", e.position},
                                {"last_token", e.last_token}};
          },
          [](const lw::msg::Ok& o) { return json::object{{"position", o.position}}; },
          [](const lw::msg::Pong& p) { return json::object{{"nonce", p.nonce}}; },
          [](const lw::msg::StatsReply& s) { return json::object{{"json", s.json}}; },
          [](const lw::msg::Error& e) {
            return json::object{{"code", e.code}, {"fatal", e.fatal}, {"message", e.message}};
          },
          [](const lw::msg::GetVocab&) { return json::object{}; },
          [](const lw::msg::Vocab& vm) {
            const lw::Vocab& v = vm.vocab;
            json::array tokens;
            for (std::size_t i = 0; i < v.pieces.size(); ++i) {
              tokens.push_back(json::object{{"score", v.scores[i]}, {"type", static_cast<int>(v.types[i])}, {"piece", v.pieces[i]}});
            }
            json::object o{{"kind", static_cast<int>(v.kind)}, {"bos", v.special.bos}, {"eos", v.special.eos},
                           {"eot", v.special.eot}, {"unk", v.special.unk}, {"pad", v.special.pad},
                           {"add_bos", v.add_bos}, {"add_eos", v.add_eos}, {"add_space_prefix", v.add_space_prefix},
                           {"chat_template", vm.chat_template}, {"tokens", tokens}};
            if (vm.extended) {  // the 1.3 trailer
              json::array ends, merges;
              for (const int id : v.special.also_end) ends.push_back(id);
              for (const auto& mg : v.merges) merges.push_back(json::value(mg));
              o["end_ids"] = ends;
              o["pre"] = v.pre;
              o["merges"] = merges;
            }
            return o;
          },
      },
      m);
}

// Numbers compare by value (floats as float32), everything else exactly.
bool same(const json::value& a, const json::value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_double() || b.is_double()) return static_cast<float>(a.to_number<double>()) == static_cast<float>(b.to_number<double>());
    if (a.is_int64() || b.is_int64()) return a.to_number<std::int64_t>() == b.to_number<std::int64_t>();
    return a.to_number<std::uint64_t>() == b.to_number<std::uint64_t>();
  }
  if (a.is_array() && b.is_array()) {
    const auto &x = a.as_array(), &y = b.as_array();
    if (x.size() != y.size()) return false;
    for (std::size_t i = 0; i < x.size(); ++i) {
      if (!same(x[i], y[i])) return false;
    }
    return true;
  }
  if (a.is_object() && b.is_object()) {
    const auto &x = a.as_object(), &y = b.as_object();
    if (x.size() != y.size()) return false;
    for (const auto& kv : x) {
      if (!y.contains(kv.key()) || !same(kv.value(), y.at(kv.key()))) return false;
    }
    return true;
  }
  return a == b;
}

}  // namespace

TEST_CASE("every protocol vector round-trips through the codec", "[proto]") {
  const fs::path dir = fs::path(LW_SOURCE_DIR) / "proto-spec" / "vectors";
  std::vector<fs::path> hexes;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() == ".hex") hexes.push_back(e.path());
  }
  std::sort(hexes.begin(), hexes.end());
  REQUIRE(hexes.size() >= 29);
  std::set<std::string> types_seen;
  for (const auto& hp : hexes) {
    INFO(hp.filename().string());
    const auto bytes = read_hex(hp);
    auto jp = hp;
    jp.replace_extension(".json");
    std::ifstream in(jp);
    std::stringstream ss;
    ss << in.rdbuf();
    const auto meaning = json::parse(ss.str()).as_object();
    REQUIRE(bytes.size() >= lw::kFrameHeaderBytes);
    // Vectors marked before_hello hold for a connection still awaiting HELLO: 4096 bytes at most.
    const bool before_hello = meaning.contains("before_hello") && meaning.at("before_hello").as_bool();
    const auto header = lw::decode_header(
        std::span<const std::uint8_t, lw::kFrameHeaderBytes>(bytes.data(), lw::kFrameHeaderBytes),
        before_hello ? lw::kMaxHelloFrameBytes : lw::kDefaultMaxFrameBytes);
    const auto payload = std::span(bytes).subspan(lw::kFrameHeaderBytes);
    if (meaning.contains("error")) {
      const std::string want(meaning.at("error").as_string());
      lw::errc got = lw::errc::ok;
      if (!header) {
        got = static_cast<lw::errc>(header.error().code.value());
      } else {
        REQUIRE(header->length == payload.size());
        const auto m = lw::decode_payload(header->type, payload);
        REQUIRE_FALSE(m.has_value());
        got = static_cast<lw::errc>(m.error().code.value());
        CHECK_FALSE(m.error().message.empty());
      }
      CHECK(lw::errc_id(got) == want);
      continue;
    }
    REQUIRE(header.has_value());
    CHECK(header->request_id == meaning.at("request_id").to_number<std::uint32_t>());
    REQUIRE(header->length == payload.size());
    const auto m = lw::decode_payload(header->type, payload);
    REQUIRE(m.has_value());
    CHECK(lw::message_name(lw::message_type(*m)) == std::string(meaning.at("type").as_string()));
    types_seen.insert(std::string(meaning.at("type").as_string()));
    const auto fields = fields_of(*m);
    INFO("decoded: " << json::serialize(fields));
    CHECK(same(fields, meaning.at("fields")));
    // A handshake frame from a newer peer: the known fields re-encode to the frame less its
    // ignored tail (the header's length aside).
    const std::size_t ignored =
        meaning.contains("ignored_trailing_bytes") ? meaning.at("ignored_trailing_bytes").to_number<std::size_t>() : 0;
    auto again = lw::encode_frame(*m, header->request_id);
    REQUIRE(again.size() + ignored == bytes.size());
    CHECK(std::equal(again.begin() + lw::kFrameHeaderBytes, again.end(), bytes.begin() + lw::kFrameHeaderBytes));
    if (ignored == 0) CHECK(again == bytes);
  }
  CHECK(types_seen.size() == 20);  // every message type has a vector
}

TEST_CASE("frame header limits are checked before allocation", "[proto]") {
  std::array<std::uint8_t, lw::kFrameHeaderBytes> h{};
  lw::encode_header(h, {0x03, 9, 1000});
  CHECK(lw::decode_header(h, 1000).has_value());
  const auto r = lw::decode_header(h, 999);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().code == lw::make_error_code(lw::errc::frame_too_large));
  // Error codes map to the wire and back; local-only codes travel as internal.
  CHECK(lw::from_wire(lw::to_wire(lw::errc::context_full)) == lw::errc::context_full);
  CHECK(lw::to_wire(lw::errc::bad_checkpoint) == lw::to_wire(lw::errc::internal));
  CHECK(lw::from_wire(999) == lw::errc::internal);
}

TEST_CASE("decoding random and truncated payloads never crashes", "[proto]") {
  std::uint64_t s = 12345;
  auto next = [&] {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  };
  for (int i = 0; i < 20000; ++i) {
    std::vector<std::uint8_t> p(next() % 64);
    for (auto& b : p) b = static_cast<std::uint8_t>(next());
    const auto type = static_cast<std::uint8_t>(next());
    const auto m = lw::decode_payload(type, p);
    if (m) {
      // whatever parsed re-encodes to the same payload
      CHECK(lw::encode_payload(*m) == p);
    }
  }
}

TEST_CASE("empty LOGITS and empty payloads encode and decode (fuzz regression)", "[proto]") {
  const auto frame = lw::encode_frame(lw::msg::Logits{5, {}}, 1);
  const auto m = lw::decode_payload(0x83, std::span(frame).subspan(lw::kFrameHeaderBytes));
  REQUIRE(m.has_value());
  CHECK(std::get<lw::msg::Logits>(*m).values.empty());
  CHECK(lw::encode_frame(lw::msg::Cancel{}, 2).size() == lw::kFrameHeaderBytes);
}

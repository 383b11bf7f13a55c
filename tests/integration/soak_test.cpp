// The CI soak: 64 fault-injecting clients for 30 s against a real server (bench/soak.sh runs
// the same driver longer).
#include "tests/raw_socket.hpp"
#include "tests/server_process.hpp"

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <thread>

namespace lw = llamawire;
namespace t = llamawire::test;

TEST_CASE("soak: 64 clients generating, cancelling, disconnecting, sending garbage for 30 s", "[net][soak][slow]") {
  LW_REQUIRE_SHARED();
  t::ServerProcess server({"-c", (t::models_dir() / "aidreams260K.bin").string(), "-z",
                           (t::models_dir() / "tok512.bin").string(), "--max-connections", "512", "--max-sessions", "128",
                           "--prefix-cache-mb", "16"});
  // Baseline after a first request (allocator arenas, tokenizer copy, scratch).
  REQUIRE(t::run_client(server, {"-n", "60", "-i", "I dreamed"}).exit_code == 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const auto baseline = server.rss_bytes();
  const auto r = t::run_process({(t::bin_dir() / "llamawire-soak").string(), "-o", server.port_str(), "--clients",
                                 "64", "--duration", std::getenv("LW_SOAK_SECONDS") ? std::getenv("LW_SOAK_SECONDS") : "30"},
                                "", 300);
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  const auto j = boost::json::parse(r.out).as_object();
  CHECK(j.at("completed").to_number<std::uint64_t>() > 0);
  CHECK(j.at("mismatched").to_number<std::uint64_t>() == 0);
  CHECK(j.at("unexpected").to_number<std::uint64_t>() == 0);
  CHECK(j.at("cancelled").to_number<std::uint64_t>() == j.at("cancelled_prefix_ok").to_number<std::uint64_t>());
  CHECK(j.at("disconnects_mid_stream").to_number<std::uint64_t>() > 0);
  CHECK(j.at("malformed_sent").to_number<std::uint64_t>() == j.at("malformed_answered").to_number<std::uint64_t>());
  CHECK(server.alive());
  // Everyone left: sessions and KV blocks are back (but for the prefix cache's blocks, which
  // no one holds any more and which stay within --prefix-cache-mb), and so is the memory.
  boost::json::object st;
  for (int i = 0; i < 200; ++i) {
    t::RawSocket s(server.port());
    REQUIRE(s.handshake());
    REQUIRE(s.send(lw::msg::Stats{}, 2));
    const auto reply = s.receive();
    REQUIRE(reply);
    st = boost::json::parse(std::get<lw::msg::StatsReply>(reply->second).json).as_object();
    if (st.at("sessions_active").to_number<int>() == 1 &&
        st.at("kv_bytes_used").to_number<std::uint64_t>() == st.at("prefix_cache_bytes").to_number<std::uint64_t>() &&
        st.at("prefix_cache_bytes") == st.at("prefix_cache_unreferenced_bytes")) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  CHECK(st.at("sessions_active").to_number<int>() == 1);
  CHECK(st.at("kv_bytes_used").to_number<std::uint64_t>() == st.at("prefix_cache_bytes").to_number<std::uint64_t>());
  CHECK(st.at("prefix_cache_bytes") == st.at("prefix_cache_unreferenced_bytes"));
  CHECK(st.at("prefix_cache_bytes").to_number<std::uint64_t>() <= (16u << 20));
  CHECK(st.at("prefix_cache_blocks_published").to_number<std::uint64_t>() > 0);
  const auto after = server.rss_bytes();
  INFO("RSS baseline " << baseline / 1048576.0 << " MiB, after " << after / 1048576.0 << " MiB");
#ifndef LW_SANITIZED
  CHECK(after <= baseline + (48u << 20));  // 32 MiB of slack, and the cache's 16
#endif
  CHECK(server.stop() == 0);
}

#include "common/sampler.hpp"
#include "common/tokenizer.hpp"
#include "server/engine/scheduler.hpp"
#include "server/model/kv_cache.hpp"
#include "server/model/weight_store.hpp"
#include "tests/support.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <future>
#include <memory>
#include <thread>
#include <vector>

namespace lw = llamawire;
namespace t = llamawire::test;

namespace {

constexpr int kCtx = 128;
const std::vector<int> kPrompt = {1, 300, 200, 42};  // aidreams260K ids (vocab 512)

std::shared_ptr<const lw::WeightStore> aidreams() {
  return lw::WeightStore::load((t::models_dir() / "aidreams260K.bin").string()).value();
}

lw::Scheduler::Options two_threads() {
  lw::Scheduler::Options o;
  o.threads = 2;
  return o;
}

// Submits one step (the caller has reserved its positions) and returns its completion.
std::future<boost::system::error_code> submit(lw::Scheduler& s, lw::KvCache& kv, const std::vector<int>& tokens,
                                              int start, lw::Scheduler::Output out) {
  auto done = std::make_shared<std::promise<boost::system::error_code>>();
  auto f = done->get_future();
  s.async_step(kv, tokens, start, out, false, [done](boost::system::error_code ec) { done->set_value(ec); });
  return f;
}

// What a session did before the scheduler carried generations on: one step per token,
// each submitted after the last one completed.
std::vector<int> step_by_step(lw::Scheduler& s, std::uint64_t seed, int n) {
  const auto& cfg = s.weights().config();
  lw::KvCache kv(cfg, kCtx);
  lw::Sampler sampler(cfg.vocab_size, {0.9f, 0.9f, seed});
  int token = 0;
  std::vector<int> out;
  std::vector<int> input = kPrompt;
  int pos = 0;
  while (static_cast<int>(out.size()) < n) {
    REQUIRE(kv.reserve(pos + static_cast<int>(input.size())));
    REQUIRE(!submit(s, kv, input, pos, lw::Scheduler::TokenOut{&sampler, &token}).get());
    pos += static_cast<int>(input.size());
    out.push_back(token);
    input.assign(1, token);
  }
  return out;
}

// One GENERATE-like step that the scheduler carries on: the tokens it delivered, then the
// one it completed with.
struct Carried {
  lw::KvCache kv;
  lw::Sampler sampler;
  std::atomic<bool> hold{false};
  std::vector<int> delivered;  // written on the scheduler thread, read after completion
  int last = -1;
  lw::Scheduler::Continuation carry;

  Carried(const lw::Scheduler& s, std::uint64_t seed, int limit, lw::KvBudget* budget = nullptr)
      : kv(s.weights().config(), kCtx, budget), sampler(s.weights().config().vocab_size, {0.9f, 0.9f, seed}) {
    carry.limit_pos = limit;
    carry.hold = &hold;
    carry.deliver = [this](int token) { delivered.push_back(token); };
  }
  std::future<boost::system::error_code> start(lw::Scheduler& s) {
    REQUIRE(kv.reserve(static_cast<int>(kPrompt.size())));
    return submit(s, kv, kPrompt, 0, lw::Scheduler::TokenOut{&sampler, &last, &carry});
  }
  std::vector<int> tokens() const {
    auto all = delivered;
    all.push_back(last);
    return all;
  }
};

bool has_bos(const std::vector<int>& v) { return std::find(v.begin(), v.end(), lw::kBosToken) != v.end(); }

// Two carried generations (seeds 11 and 12) submitted together draw what each draws alone.
void check_batched_pair(lw::Scheduler& s, int limit, const std::vector<int>& ref11, const std::vector<int>& ref12) {
  Carried a(s, 11, limit);
  Carried b(s, 12, limit);
  auto fa = a.start(s);
  auto fb = b.start(s);
  REQUIRE(!fa.get());
  REQUIRE(!fb.get());
  CHECK(a.tokens() == ref11);
  CHECK(b.tokens() == ref12);
}

}  // namespace

TEST_CASE("the scheduler carries a generation on with the tokens a step-by-step loop draws", "[scheduler]") {
  LW_REQUIRE_SHARED();
  lw::Scheduler s(aidreams(), two_threads());
  const int n = 60;
  const auto ref = step_by_step(s, 11, n);
  REQUIRE(!has_bos(ref));  // the comparison below is over all n tokens
  // The prompt fills 4 positions and the first token is drawn there; each carried step
  // fills one more, and the last token is the one drawn with limit_pos positions cached.
  const int limit = static_cast<int>(kPrompt.size()) + n - 1;
  Carried c(s, 11, limit);
  REQUIRE(!c.start(s).get());
  CHECK(c.delivered.size() == static_cast<std::size_t>(n - 1));
  CHECK(c.tokens() == ref);
  // Two carried generations batched together draw what each draws alone.
  const auto ref2 = step_by_step(s, 12, n);
  REQUIRE(!has_bos(ref2));
  check_batched_pair(s, limit, ref, ref2);
  CHECK(s.stats().max_steps_in_batch >= 2);

  // The same through a hand-off strand served by two threads, as in the server: each
  // batch's tokens and completions go out in one handler, still in order.
  lw::asio::io_context io(2);
  auto work = lw::asio::make_work_guard(io);
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i) threads.emplace_back([&io] { io.run(); });
  {
    lw::Scheduler h(aidreams(), two_threads());
    h.set_handoff(lw::asio::make_strand(io));
    check_batched_pair(h, limit, ref, ref2);
  }
  work.reset();
  for (auto& th : threads) th.join();
}

TEST_CASE("a carried generation stops one step after hold is set, and where the KV budget ends", "[scheduler]") {
  LW_REQUIRE_SHARED();
  lw::Scheduler s(aidreams(), two_threads());
  const auto ref = step_by_step(s, 5, 30);
  REQUIRE(!has_bos(ref));
  SECTION("hold") {
    Carried c(s, 5, kCtx);
    // Set while the scheduler hands over the 7th token: it is already the next step's
    // input, and that step's token is the last.
    c.carry.deliver = [&c](int token) {
      c.delivered.push_back(token);
      if (c.delivered.size() == 7) c.hold = true;
    };
    REQUIRE(!c.start(s).get());
    CHECK(c.delivered.size() == 7);
    CHECK(c.tokens() == std::vector<int>(ref.begin(), ref.begin() + 8));
  }
  SECTION("budget") {
    // One 16-position block: tokens are drawn with 4..16 positions cached; the one drawn at
    // 16 cannot be fed back in (position 16 needs a second block), so it is the last.
    const lw::KvCache probe(s.weights().config(), kCtx);
    lw::KvBudget budget(probe.block_bytes());
    Carried c(s, 5, kCtx, &budget);
    REQUIRE(!c.start(s).get());
    CHECK(c.delivered.size() == 12);
    CHECK(c.tokens() == std::vector<int>(ref.begin(), ref.begin() + 13));
    CHECK(c.kv.reserved() == lw::KvCache::kBlockPositions);
    CHECK(budget.used() == probe.block_bytes());
  }
}

// The batching policy by itself: plan_batch with no weights, threads or clocks. The
// simulation below runs plans the way the Scheduler does (rows computed, waits counted,
// finished steps leaving) to check what only shows over many batches: no starvation.
#include "server/engine/batch_plan.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <numeric>

namespace lw = llamawire;

namespace {

int rows_of(const std::vector<lw::PlannedSlice>& plan) {
  return std::accumulate(plan.begin(), plan.end(), 0, [](int a, const lw::PlannedSlice& s) { return a + s.rows; });
}

// Each step appears at most once, with rows in (0, left], `last` exactly when it takes all.
void check_well_formed(const std::vector<lw::WaitingStep>& steps, const std::vector<lw::PlannedSlice>& plan,
                       const lw::BatchBudget& b) {
  std::map<int, int> seen;
  int logits = 0;
  for (const auto& s : plan) {
    REQUIRE(s.step >= 0);
    REQUIRE(s.step < static_cast<int>(steps.size()));
    CHECK(++seen[s.step] == 1);
    CHECK(s.rows > 0);
    CHECK(s.rows <= steps[static_cast<std::size_t>(s.step)].left);
    CHECK(s.last == (s.rows == steps[static_cast<std::size_t>(s.step)].left));
    logits += s.last ? 1 : 0;
  }
  CHECK(rows_of(plan) <= b.max_rows);
  CHECK(logits <= b.max_logit_rows);
}

}  // namespace

TEST_CASE("plan: decodes first, then prompts in arrival order", "[scheduler][plan]") {
  const lw::BatchBudget b{16, 8, 4, 4};
  // A prompt of 10 rows arrived first, then three decodes, then a prompt of 3.
  const std::vector<lw::WaitingStep> steps{{10, 0}, {1, 0}, {1, 0}, {1, 0}, {3, 0}};
  const auto plan = lw::plan_batch(steps, b);
  check_well_formed(steps, plan, b);
  REQUIRE(plan.size() == 5);
  CHECK(plan[0].step == 1);
  CHECK(plan[1].step == 2);
  CHECK(plan[2].step == 3);
  // Two prompts wait: the first gets max(chunk, 13 / 2) = 6 rows, the second all it needs.
  CHECK(plan[3].step == 0);
  CHECK(plan[3].rows == 6);
  CHECK_FALSE(plan[3].last);
  CHECK(plan[4].step == 4);
  CHECK(plan[4].rows == 3);
  CHECK(plan[4].last);
  CHECK(rows_of(plan) == 12);
}

TEST_CASE("plan: a lone prompt takes the whole budget, chunked over batches", "[scheduler][plan]") {
  const lw::BatchBudget b{64, 8, 16, 4};
  std::vector<lw::WaitingStep> steps{{150, 0}};
  std::vector<int> chunks;
  while (steps[0].left > 0) {
    const auto plan = lw::plan_batch(steps, b);
    check_well_formed(steps, plan, b);
    REQUIRE(plan.size() == 1);
    chunks.push_back(plan[0].rows);
    steps[0].left -= plan[0].rows;
  }
  CHECK(chunks == std::vector<int>{64, 64, 22});
}

TEST_CASE("plan: the budgets hold, and a prompt's last row waits for a logits row", "[scheduler][plan]") {
  const lw::BatchBudget b{8, 2, 4, 4};
  // Three decodes but two logits rows: the third waits. The prompt of 3 rows gets two rows
  // (all but the one that needs logits).
  const std::vector<lw::WaitingStep> steps{{1, 0}, {1, 0}, {1, 0}, {3, 0}};
  const auto plan = lw::plan_batch(steps, b);
  check_well_formed(steps, plan, b);
  REQUIRE(plan.size() == 3);
  CHECK(plan[0].step == 0);
  CHECK(plan[1].step == 1);
  CHECK(plan[2].step == 3);
  CHECK(plan[2].rows == 2);
  CHECK_FALSE(plan[2].last);

  // No rows at all: an empty plan.
  CHECK(lw::plan_batch(steps, lw::BatchBudget{0, 2, 4, 4}).empty());
  CHECK(lw::plan_batch({}, b).empty());
}

TEST_CASE("plan: a step passed over max_wait batches goes first", "[scheduler][plan]") {
  const lw::BatchBudget b{4, 4, 4, 3};
  // Four decodes fill the rows; a prompt that has waited 3 batches comes before them.
  const std::vector<lw::WaitingStep> steps{{1, 0}, {1, 0}, {1, 0}, {1, 0}, {5, 3}, {1, 5}};
  const auto plan = lw::plan_batch(steps, b);
  check_well_formed(steps, plan, b);
  REQUIRE(plan.size() >= 2);
  CHECK(plan[0].step == 5);  // the longest wait first
  CHECK(plan[1].step == 4);
  CHECK(rows_of(plan) == 4);
}

TEST_CASE("plan: no step starves, whatever the load (simulated batches)", "[scheduler][plan]") {
  // More decoders than logits rows, and decoders that fill every row: under "decodes in
  // arrival order" alone the late decoders and the prompt would wait forever.
  for (const auto& [decoders, b] : {std::pair{12, lw::BatchBudget{16, 8, 4, 4}}, std::pair{20, lw::BatchBudget{16, 16, 4, 4}}}) {
    INFO("decoders " << decoders << " rows " << b.max_rows << " logits " << b.max_logit_rows);
    std::vector<lw::WaitingStep> steps(static_cast<std::size_t>(decoders), lw::WaitingStep{1, 0});
    steps.push_back({40, 0});  // a prompt that arrived last
    std::vector<int> longest_wait(steps.size(), 0);
    int prompt_rows = 0;
    for (int batch = 0; batch < 200; ++batch) {
      const auto plan = lw::plan_batch(steps, b);
      check_well_formed(steps, plan, b);
      std::vector<char> in(steps.size(), 0);
      for (const auto& s : plan) {
        in[static_cast<std::size_t>(s.step)] = 1;
        if (s.step == decoders) {
          prompt_rows += s.rows;
          steps.back().left -= s.rows;
        }
      }
      for (std::size_t i = 0; i < steps.size(); ++i) {
        // decoders decode forever (their next step is again one row); the prompt restarts
        if (i == steps.size() - 1 && steps[i].left == 0) steps[i].left = 40;
        steps[i].waited = in[i] ? 0 : steps[i].waited + 1;
        longest_wait[i] = std::max(longest_wait[i], steps[i].waited);
      }
    }
    for (std::size_t i = 0; i < steps.size(); ++i) {
      INFO("step " << i);
      // max_wait batches, plus those needed for the overdue steps ahead of it to drain
      CHECK(longest_wait[i] <= b.max_wait + (decoders + 1) * 1 / std::max(1, b.max_logit_rows) + 2);
    }
    CHECK(prompt_rows > 40);  // the prompt finished at least once
  }
}

TEST_CASE("plan: the same input gives the same plan", "[scheduler][plan]") {
  const lw::BatchBudget b{32, 6, 8, 4};
  const std::vector<lw::WaitingStep> steps{{7, 1}, {1, 0}, {30, 6}, {1, 2}, {1, 9}, {12, 0}, {1, 0}};
  const auto a = lw::plan_batch(steps, b);
  const auto c = lw::plan_batch(steps, b);
  check_well_formed(steps, a, b);
  REQUIRE(a.size() == c.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    CHECK(a[i].step == c[i].step);
    CHECK(a[i].rows == c[i].rows);
    CHECK(a[i].last == c[i].last);
  }
}

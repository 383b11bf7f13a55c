#include "server/engine/batch_plan.hpp"

#include <algorithm>
#include <cstddef>

namespace llamawire {

std::vector<PlannedSlice> plan_batch(std::span<const WaitingStep> steps, const BatchBudget& budget) {
  std::vector<PlannedSlice> plan;
  int rows = std::max(0, budget.max_rows);
  int logits = std::clamp(budget.max_logit_rows, 0, rows);
  std::vector<char> taken(steps.size(), 0);
  int prompts = 0;
  for (const WaitingStep& s : steps) prompts += s.left > 1 ? 1 : 0;

  auto take = [&](std::size_t i, int want) {
    const WaitingStep& s = steps[i];
    int count = std::min({want, s.left, rows});
    bool last = count == s.left;
    if (last && logits == 0) {
      --count;  // everything but the row that needs logits
      last = false;
    }
    if (count <= 0) return;
    plan.push_back({static_cast<int>(i), count, last});
    taken[i] = 1;
    rows -= count;
    if (last) --logits;
  };
  // A prompt's share: all that is left when it is the only one, else at least the chunk.
  auto share = [&] { return prompts > 1 ? std::max(budget.prefill_chunk, rows / prompts) : rows; };
  auto give = [&](std::size_t i) { take(i, steps[i].left == 1 ? 1 : share()); };

  std::vector<std::size_t> overdue;
  for (std::size_t i = 0; i < steps.size(); ++i) {
    if (steps[i].left > 0 && steps[i].waited >= budget.max_wait) overdue.push_back(i);
  }
  std::stable_sort(overdue.begin(), overdue.end(),
                   [&](std::size_t a, std::size_t b) { return steps[a].waited > steps[b].waited; });
  for (std::size_t i : overdue) give(i);
  for (std::size_t i = 0; i < steps.size(); ++i) {
    if (!taken[i] && steps[i].left == 1) give(i);
  }
  for (std::size_t i = 0; i < steps.size(); ++i) {
    if (!taken[i] && steps[i].left > 1) give(i);
  }
  return plan;
}

}  // namespace llamawire

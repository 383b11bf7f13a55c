// The batching policy as a pure function: from the steps waiting for the compute threads
// and the budgets of one forward pass to the rows each step gets in the next batch. No
// weights, threads or clocks, so the policy is unit-tested by itself (tests/unit/
// batch_plan_test.cpp); the Scheduler executes the plans.
#pragma once

#include <span>
#include <vector>

namespace llamawire {

// A waiting step as the planner sees it, in arrival order.
struct WaitingStep {
  int left = 0;    // rows still to compute (1: a decode, or a prompt's last row)
  int waited = 0;  // batches planned since this step last got rows (or arrived)
};

struct BatchBudget {
  int max_rows = 256;        // rows of one forward pass
  int max_logit_rows = 128;  // steps that finish in it (each needs a logits row)
  int prefill_chunk = 64;    // rows a prompt is guaranteed per batch while other prompts wait
  // A step passed over this many batches goes before every other (decodes first is a
  // preference, not a starvation: with more decoders than logit rows, or decoders that
  // fill the rows, prompts and late decoders still advance).
  int max_wait = 4;
};

// One step's share of a batch: rows [done, done + rows) of step `step`; `last`: they end
// the step, so it gets the logits of its last row.
struct PlannedSlice {
  int step = 0;
  int rows = 0;
  bool last = false;
};

// The rules, in order:
// 1. Steps that have waited max_wait batches or more, longest wait first (ties: arrival).
// 2. Then decodes (one row left), in arrival order: every decoding session advances each
//    batch while the budgets allow.
// 3. Then prompts in arrival order; when several wait, each gets at least prefill_chunk
//    rows (or an even share of what is left, if larger), the last ones what remains.
// A slice that would end its step takes a logits row; when none is left it is cut one row
// short (a prompt), or skipped (a decode). The sum of rows never exceeds max_rows. A step
// appears at most once. The plan depends only on the arguments.
std::vector<PlannedSlice> plan_batch(std::span<const WaitingStep> steps, const BatchBudget& budget);

}  // namespace llamawire

#include "server/model/parallel.hpp"

#include "common/error.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <system_error>

#include "server/kernels/kernels.hpp"

namespace llamawire {
namespace {

// ~50 us of spinning before a worker sleeps: long enough to catch the next for_each of the
// same forward, short enough not to steal the network threads' core between batches.
constexpr int kSpinIterations = 2000;

inline void cpu_relax() { kernels::spin_pause(); }

}  // namespace

ThreadParallel::ThreadParallel(int n_threads) : n_threads_(std::max(1, n_threads)) {
  try {
    for (int t = 1; t < n_threads_; ++t) workers_.emplace_back([this, t] { worker_loop(t); });
  } catch (const std::system_error& e) {
    // Out of memory for stacks, or at the thread limit: stop the workers already started
    // (the destructor does not run for a constructor that throws) and say so.
    const auto started = workers_.size();
    stop_workers();
    throw std::runtime_error("cannot start " + std::to_string(n_threads_) + " compute threads (" +
                             std::to_string(started + 1) + " started): " + e.what());
  }
}

ThreadParallel::~ThreadParallel() { stop_workers(); }

void ThreadParallel::stop_workers() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
    generation_.fetch_add(1);
  }
  wake_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadParallel::run_tasks(int thread) {
  for (;;) {
    const int t = next_task_.fetch_add(1, std::memory_order_relaxed);
    if (t >= n_tasks_) break;
    (*fn_)(t, thread);
  }
}

void ThreadParallel::for_each(int n_tasks, TaskRef fn) {
  if (n_tasks <= 0) return;
  if (n_threads_ == 1 || n_tasks == 1) {
    for (int t = 0; t < n_tasks; ++t) fn(t, 0);
    return;
  }
  {
    std::lock_guard lock(mutex_);
    fn_ = &fn;
    n_tasks_ = n_tasks;
    next_task_.store(0, std::memory_order_relaxed);
    pending_.store(n_threads_ - 1, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  run_tasks(0);
  for (int i = 0; i < kSpinIterations && pending_.load(std::memory_order_acquire) != 0; ++i) cpu_relax();
  if (pending_.load(std::memory_order_acquire) != 0) {
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return pending_.load(std::memory_order_acquire) == 0; });
  }
}

void ThreadParallel::worker_loop(int thread) {
  std::uint64_t seen = 0;
  for (;;) {
    for (int i = 0; i < kSpinIterations && generation_.load(std::memory_order_acquire) == seen; ++i) cpu_relax();
    if (generation_.load(std::memory_order_acquire) == seen) {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
    }
    {
      std::lock_guard lock(mutex_);
      seen = generation_.load(std::memory_order_acquire);
      if (stop_) return;
    }
    run_tasks(thread);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard lock(mutex_);
      done_.notify_one();
    }
  }
}

}  // namespace llamawire

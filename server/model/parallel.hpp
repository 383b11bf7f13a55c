// How the model asks for work to be split across threads; the compute pool implements it.
#pragma once

#include <memory>
#include <type_traits>

namespace llamawire {

// A non-owning reference to a callable void(int task, int thread). Unlike std::function it
// never allocates, so the forward pass can hand out work without touching the heap.
class TaskRef {
 public:
  template <class F>
    requires(!std::is_same_v<std::remove_cvref_t<F>, TaskRef>)
  TaskRef(F&& f)  // NOLINT: implicit by design, like a function_ref
      : obj_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
        call_([](void* o, int task, int thread) { (*static_cast<std::remove_reference_t<F>*>(o))(task, thread); }) {}
  void operator()(int task, int thread) const { call_(obj_, task, thread); }

 private:
  void* obj_;
  void (*call_)(void*, int, int);
};

class Parallel {
 public:
  virtual ~Parallel() = default;
  // Number of distinct `thread` values fn may see.
  virtual int concurrency() const = 0;
  // Runs fn(task, thread) for every task in [0, n_tasks) and returns when all are done.
  // Calls with the same `thread` never overlap.
  // `fn` must outlive the call (it is a reference).
  virtual void for_each(int n_tasks, TaskRef fn) = 0;
};

// Runs everything on the calling thread.
class SerialParallel final : public Parallel {
 public:
  int concurrency() const override { return 1; }
  void for_each(int n_tasks, TaskRef fn) override {
    for (int t = 0; t < n_tasks; ++t) fn(t, 0);
  }
};

}  // namespace llamawire

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace llamawire {

// A fork-join pool: the calling thread is thread 0, plus n_threads - 1 workers that spin
// briefly between jobs and then sleep. One for_each at a time (the compute pool
// serializes its jobs), so kernels own the cores.
class ThreadParallel final : public Parallel {
 public:
  explicit ThreadParallel(int n_threads);
  ~ThreadParallel() override;
  ThreadParallel(const ThreadParallel&) = delete;
  ThreadParallel& operator=(const ThreadParallel&) = delete;

  int concurrency() const override { return n_threads_; }
  void for_each(int n_tasks, TaskRef fn) override;

 private:
  void worker_loop(int thread);
  void stop_workers();
  void run_tasks(int thread);

  int n_threads_;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<int> next_task_{0};
  std::atomic<int> pending_{0};
  int n_tasks_ = 0;
  const TaskRef* fn_ = nullptr;
  bool stop_ = false;
};

}  // namespace llamawire

// One pool for all CPU work. OpenBLAS runs single-threaded inside it, so its
// threads and ours never oversubscribe the cores. Workers spin briefly before
// sleeping: a forward pass issues dozens of short parallel ops back to back, and
// a futex wake-up per op would cost more than many of them.
//
// Work is handed out as tasks that any thread may claim, the caller included,
// and an op ends when its tasks are done, not when every worker has checked in:
// on a shared machine a worker that the OS has not scheduled must not stall the
// pass, the caller simply runs its tasks.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace evit::cpu {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return threads_; }

  // Splits [0, n) into size() contiguous chunks, each run by whichever thread claims it.
  // fn(begin, end, worker) must not throw, nor call back into the pool; `worker` is
  // unique among the threads running at once (for per-thread scratch).
  void parallelFor(size_t n, const std::function<void(size_t, size_t, int)>& fn);

  // Same, but n tasks handed out one at a time (for uneven work).
  void parallelTasks(size_t n, const std::function<void(size_t, int)>& fn);

  // Serialises whole forward passes: one pass owns every core at a time.
  std::mutex& passMutex() { return passMutex_; }

  // Largest task count of one op (the ticket's index field).
  static constexpr size_t kMaxTasks = (size_t(1) << 24) - 1;

 private:
  void workerLoop(int id);
  // Runs task(i, worker) for i in [0, n), n <= kMaxTasks, on the caller and any awake worker.
  void run(size_t n, const std::function<void(size_t, int)>& task);
  // Claims and runs tasks of the op whose ticket had generation `gen`; false when none was left.
  bool work(uint64_t gen, int id);

  int threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;  // guards sleepers_ and the sleep/wake handshake
  std::condition_variable wake_;
  int sleepers_ = 0;
  // Ticket = generation (16 bits) | task count (24) | next task (24). Claiming is a CAS on
  // the whole word, so a late worker can never claim a task of a newer op by mistake.
  std::atomic<uint64_t> ticket_{0};
  const std::function<void(size_t, int)>* task_ = nullptr;  // valid while a claimed task is unfinished
  std::atomic<size_t> done_{0};
  std::atomic<uint64_t> generation_{0};  // wakes workers; bumped once per op
  std::atomic<bool> stop_{false};
  std::mutex runMu_;
  std::mutex passMutex_;
};

// The process-wide pool; created on first use with the configured thread count.
ThreadPool& pool();
// Sets the thread count if the pool does not exist yet; returns the count the pool has or will have.
int configureThreads(int threads);

}  // namespace evit::cpu

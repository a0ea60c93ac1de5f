// One pool for all CPU work. OpenBLAS runs single-threaded inside it, so its
// threads and ours never oversubscribe the cores. Workers spin briefly before
// sleeping: a forward pass issues dozens of short parallel ops back to back, and
// a futex wake-up per op would cost more than many of them.
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

  // Splits [0, n) into size() contiguous chunks; the calling thread runs chunk 0.
  // fn(begin, end, worker) must not throw, nor call back into the pool.
  void parallelFor(size_t n, const std::function<void(size_t, size_t, int)>& fn);

  // Same, but n tasks handed out one at a time (for uneven work).
  void parallelTasks(size_t n, const std::function<void(size_t, int)>& fn);

  // Serialises whole forward passes: one pass owns every core at a time.
  std::mutex& passMutex() { return passMutex_; }

 private:
  void workerLoop(int id);
  void run(const std::function<void(int)>& job);

  int threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;  // guards sleepers_ and the sleep/wake handshake
  std::condition_variable wake_;
  int sleepers_ = 0;
  const std::function<void(int)>* job_ = nullptr;  // published by the release increment of generation_
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  std::mutex runMu_;
  std::mutex passMutex_;
};

// The process-wide pool; created on first use with the configured thread count.
ThreadPool& pool();
// Sets the thread count if the pool does not exist yet; returns the count the pool has or will have.
int configureThreads(int threads);

}  // namespace evit::cpu

#include "thread_pool.h"

#include <algorithm>
#include <atomic>
#include <cblas.h>

namespace evit::cpu {

namespace {

// About half a millisecond of pause instructions: longer than the gap between two ops of a pass.
constexpr int kSpinIterations = 1 << 14;

inline void cpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

}  // namespace

ThreadPool::ThreadPool(int threads) : threads_(std::max(1, threads)) {
  for (int i = 1; i < threads_; ++i) workers_.emplace_back([this, i] { workerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_.store(true);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::workerLoop(int id) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t g;
    int spins = 0;
    while ((g = generation_.load(std::memory_order_acquire)) == seen) {
      if (stop_.load(std::memory_order_relaxed)) return;
      if (++spins < kSpinIterations) {
        cpuRelax();
        continue;
      }
      std::unique_lock<std::mutex> lk(mu_);
      ++sleepers_;
      wake_.wait(lk, [&] { return generation_.load(std::memory_order_acquire) != seen || stop_.load(); });
      --sleepers_;
      spins = 0;
    }
    seen = g;
    (*job_)(id);
    pending_.fetch_sub(1, std::memory_order_release);
  }
}

void ThreadPool::run(const std::function<void(int)>& job) {
  if (threads_ == 1) {
    job(0);
    return;
  }
  // One job at a time: the single-op exports may run on the JS thread while a pass runs on a worker.
  std::lock_guard<std::mutex> one(runMu_);
  job_ = &job;
  pending_.store(threads_ - 1, std::memory_order_relaxed);
  bool anySleeping;
  {
    // Under the lock, a worker either sees the new generation before it sleeps or is counted.
    std::lock_guard<std::mutex> lk(mu_);
    generation_.fetch_add(1, std::memory_order_release);
    anySleeping = sleepers_ > 0;
  }
  if (anySleeping) wake_.notify_all();
  job(0);
  int spins = 0;
  while (pending_.load(std::memory_order_acquire) != 0) {
    if (++spins < kSpinIterations) {
      cpuRelax();
    } else {
      std::this_thread::yield();
    }
  }
}

void ThreadPool::parallelFor(size_t n, const std::function<void(size_t, size_t, int)>& fn) {
  if (n == 0) return;
  const size_t parts = std::min<size_t>(threads_, n);
  if (parts == 1) {
    fn(0, n, 0);
    return;
  }
  run([&](int id) {
    if ((size_t)id >= parts) return;
    // Chunk i covers [i*n/parts, (i+1)*n/parts): sizes differ by at most one.
    size_t begin = n * id / parts, end = n * (id + 1) / parts;
    fn(begin, end, id);
  });
}

void ThreadPool::parallelTasks(size_t n, const std::function<void(size_t, int)>& fn) {
  if (n == 0) return;
  if (threads_ == 1 || n == 1) {
    for (size_t i = 0; i < n; ++i) fn(i, 0);
    return;
  }
  std::atomic<size_t> next{0};
  run([&](int id) {
    for (size_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) fn(i, id);
  });
}

namespace {
std::mutex configMu;
int requestedThreads = 0;  // 0: one per hardware thread
ThreadPool* instance = nullptr;
}  // namespace

int configureThreads(int threads) {
  std::lock_guard<std::mutex> lk(configMu);
  if (instance) return instance->size();
  if (threads > 0) requestedThreads = threads;
  return requestedThreads > 0 ? requestedThreads : (int)std::max(1u, std::thread::hardware_concurrency());
}

ThreadPool& pool() {
  std::lock_guard<std::mutex> lk(configMu);
  if (!instance) {
    openblas_set_num_threads(1);
    int n = requestedThreads > 0 ? requestedThreads : (int)std::max(1u, std::thread::hardware_concurrency());
    instance = new ThreadPool(n);  // lives for the process: its threads outlive every model
  }
  return *instance;
}

}  // namespace evit::cpu

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

namespace {

constexpr uint64_t kField = (uint64_t(1) << 24) - 1;
inline uint64_t ticketGen(uint64_t t) { return t >> 48; }
inline uint64_t ticketCount(uint64_t t) { return (t >> 24) & kField; }
inline uint64_t ticketNext(uint64_t t) { return t & kField; }

}  // namespace

bool ThreadPool::work(uint64_t gen, int id) {
  bool any = false;
  uint64_t t = ticket_.load(std::memory_order_acquire);
  for (;;) {
    if (ticketGen(t) != (gen & 0xffff) || ticketNext(t) >= ticketCount(t)) return any;
    // Success means the op of generation `gen` is still running and this task is ours: the
    // caller cannot finish the op, nor replace task_, before done_ counts it.
    if (!ticket_.compare_exchange_weak(t, t + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
    (*task_)((size_t)ticketNext(t), id);
    done_.fetch_add(1, std::memory_order_release);
    any = true;
    t = ticket_.load(std::memory_order_acquire);
  }
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
    work(g, id);
  }
}

void ThreadPool::run(size_t n, const std::function<void(size_t, int)>& task) {
  // One op at a time: the single-op exports may run on the JS thread while a pass runs on a worker.
  std::lock_guard<std::mutex> one(runMu_);
  task_ = &task;
  done_.store(0, std::memory_order_relaxed);
  const uint64_t gen = generation_.load(std::memory_order_relaxed) + 1;
  ticket_.store(((gen & 0xffff) << 48) | ((uint64_t)n << 24), std::memory_order_release);
  bool anySleeping;
  {
    // Under the lock, a worker either sees the new generation before it sleeps or is counted.
    std::lock_guard<std::mutex> lk(mu_);
    generation_.store(gen, std::memory_order_release);
    anySleeping = sleepers_ > 0;
  }
  if (anySleeping) wake_.notify_all();
  work(gen, 0);
  // Only tasks another thread claimed and has not finished are left to wait for.
  int spins = 0;
  while (done_.load(std::memory_order_acquire) != n) {
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
  run(parts, [&](size_t i, int id) {
    // Chunk i covers [i*n/parts, (i+1)*n/parts): sizes differ by at most one.
    fn(n * i / parts, n * (i + 1) / parts, id);
  });
}

void ThreadPool::parallelTasks(size_t n, const std::function<void(size_t, int)>& fn) {
  if (n == 0) return;
  if (threads_ == 1 || n == 1) {
    for (size_t i = 0; i < n; ++i) fn(i, 0);
    return;
  }
  for (size_t base = 0; base < n; base += kMaxTasks) {
    const size_t count = std::min(kMaxTasks, n - base);
    run(count, [&](size_t i, int id) { fn(base + i, id); });
  }
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

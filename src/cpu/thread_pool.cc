#include "thread_pool.h"

#include <algorithm>
#include <atomic>
#include <cblas.h>

namespace evit::cpu {

ThreadPool::ThreadPool(int threads) : threads_(std::max(1, threads)) {
  for (int i = 1; i < threads_; ++i) workers_.emplace_back([this, i] { workerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::workerLoop(int id) {
  size_t seen = 0;
  for (;;) {
    const std::function<void(int)>* job;
    {
      std::unique_lock<std::mutex> lk(mu_);
      wake_.wait(lk, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      job = job_;
    }
    (*job)(id);
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (--pending_ == 0) done_.notify_one();
    }
  }
}

void ThreadPool::run(const std::function<void(int)>& job) {
  if (threads_ == 1) {
    job(0);
    return;
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    job_ = &job;
    pending_ = threads_ - 1;
    ++generation_;
  }
  wake_.notify_all();
  job(0);
  std::unique_lock<std::mutex> lk(mu_);
  done_.wait(lk, [&] { return pending_ == 0; });
  job_ = nullptr;
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

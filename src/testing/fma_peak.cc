#include <atomic>
#include <chrono>
#include <immintrin.h>
#include <thread>
#include <vector>

#include "fma_peak.h"

namespace evit::cpu {

namespace {

// Ten independent FMA chains cover the FMA latency on two ports; returns flops done.
__attribute__((target("avx2,fma"))) double fmaLoopAvx2(double seconds) {
  __m256 acc[10];
  for (int i = 0; i < 10; ++i) acc[i] = _mm256_set1_ps(1.0f + i * 1e-3f);
  const __m256 a = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
  const auto start = std::chrono::steady_clock::now();
  double flops = 0;
  for (;;) {
    for (int it = 0; it < 100000; ++it)
      for (int i = 0; i < 10; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, c);
    flops += 100000.0 * 10 * 8 * 2;
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() >= seconds) break;
  }
  float sink[8];
  __m256 s = acc[0];
  for (int i = 1; i < 10; ++i) s = _mm256_add_ps(s, acc[i]);
  _mm256_storeu_ps(sink, s);
  volatile float keep = sink[0];
  (void)keep;
  return flops;
}

// The same with 512-bit registers: on CPUs with two full-width FMA units this is the real peak.
__attribute__((target("avx512f"))) double fmaLoopAvx512(double seconds) {
  __m512 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(1.0f + i * 1e-3f);
  const __m512 a = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
  const auto start = std::chrono::steady_clock::now();
  double flops = 0;
  for (;;) {
    for (int it = 0; it < 100000; ++it)
      for (int i = 0; i < 12; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, c);
    flops += 100000.0 * 12 * 16 * 2;
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() >= seconds) break;
  }
  __m512 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, acc[i]);
  alignas(64) float sink[16];
  _mm512_store_ps(sink, s);
  volatile float keep = sink[0];
  (void)keep;
  return flops;
}

}  // namespace

bool cpuHasAvx512() { return __builtin_cpu_supports("avx512f"); }

double measureFmaPeak(int threads, double seconds, FmaWidth width) {
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (width == FmaWidth::Widest) width = cpuHasAvx512() ? FmaWidth::Avx512 : FmaWidth::Avx2;
  if (width == FmaWidth::Avx512 && !cpuHasAvx512()) return 0.0;
  if (width == FmaWidth::Avx2 && !avx2) return 0.0;
  if (threads < 1) threads = 1;
  std::vector<double> flops(threads);
  std::vector<std::thread> ts;
  const auto start = std::chrono::steady_clock::now();
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] { flops[t] = width == FmaWidth::Avx512 ? fmaLoopAvx512(seconds) : fmaLoopAvx2(seconds); });
  for (auto& t : ts) t.join();
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  double total = 0;
  for (double f : flops) total += f;
  return total / elapsed / 1e9;
}

}  // namespace evit::cpu

// The machine's sustained FMA throughput, the benchmark's yardstick for GEMM efficiency.
#pragma once

namespace evit::cpu {

enum class FmaWidth { Widest, Avx2, Avx512 };
// Sustained single-precision FMA throughput of `threads` threads over `seconds`, in GFLOP/s;
// 0 when the CPU lacks the instructions. Widest: AVX-512 where present, else AVX2.
double measureFmaPeak(int threads, double seconds, FmaWidth width = FmaWidth::Widest);
bool cpuHasAvx512();

}  // namespace evit::cpu

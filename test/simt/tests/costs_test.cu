// The emulator's counting flavour and its sampler (test/simt/README.md, "Counting" and
// "Sampling"): known answers for the global bytes and sectors of small kernels and for the
// mma.sync count of the project's tensor-core GEMM, then sampled launches against the same
// launches run in full, and that a grid under the threshold is never sampled.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "../../../cuda/kernels.h"
#include "harness.h"

using harness::check;

namespace {

// out[i] = 2 in[i]: 4 bytes read and 4 written per element, each element once.
__global__ void scaleKernel(float* out, const float* in, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = 2.0f * in[i];
}

// Every thread reads in[0] and writes its own float: many requests, one sector read.
__global__ void broadcastKernel(float* out, const float* in) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  out[i] = in[0];
}

// A 2-D grid whose edge blocks do less: block (x, y) reads x+1 floats of its row when it is
// not the last along x, one float when it is, so classes differ and interiors vary linearly.
__global__ void rampKernel(float* out, const float* in, int width) {
  const int row = blockIdx.y;
  const int reads = blockIdx.x + 1 == gridDim.x ? 1 : (int)blockIdx.x + 1;
  float s = 0;
  for (int j = threadIdx.x; j < reads; j += blockDim.x) s += in[row * width + j];
  if (threadIdx.x == 0) out[row * gridDim.x + blockIdx.x] = s;
}

template <class... P, class... A>
void launch(void (*k)(P...), dim3 grid, dim3 block, A... args) {
  cudaLaunchConfig_t c = {};
  c.gridDim = grid;
  c.blockDim = block;
  check(cudaLaunchKernelEx(&c, k, args...) == cudaSuccess, "launch accepted");
}

evit_simt::LaunchRecord lastRecord() {
  const auto r = evit_simt::launchRecords();
  return r.empty() ? evit_simt::LaunchRecord{} : r.back();
}

template <class Launch>
evit_simt::LaunchRecord recordOf(Launch&& launch) {
  evit_simt::clearLaunchRecords();
  launch();
  cudaDeviceSynchronize();
  return lastRecord();
}

std::string str(uint64_t v) { return std::to_string(v); }

void knownBytes() {
  check(evit_simt::countingBuild(), "this program is the counting flavour");
  const int n = 1000;
  float *in = nullptr, *out = nullptr;
  cudaMalloc(&in, n * sizeof(float));
  cudaMalloc(&out, 4096 * sizeof(float));
  std::vector<float> host(n, 1.5f);
  cudaMemcpy(in, host.data(), n * sizeof(float), cudaMemcpyHostToDevice);
  auto r = recordOf([&] { launch(scaleKernel, dim3((n + 127) / 128), dim3(128), out, (const float*)in, n); });
  check(r.globalReadBytes == 4000 && r.globalWriteBytes == 4000,
        "scale of 1000 floats: 4000 bytes read, 4000 written (" + str(r.globalReadBytes) + ", " + str(r.globalWriteBytes) + ")");
  check(r.readSectors == 125 && r.writeSectors == 125 && r.readSpanSectors == 125 && r.writeSpanSectors == 125,
        "scale: 125 unique 32-byte sectors each way, exact and span (" + str(r.readSectors) + ", " + str(r.writeSectors) +
            ", " + str(r.readSpanSectors) + ")");
  check(r.blockReadSectors == 125 && r.blockWriteSectors == 125, "scale: blocks share no sector (" + str(r.blockReadSectors) + ")");
  check(r.blocksRun == 8 && !r.sampled, "scale: all 8 blocks ran");
  std::vector<float> back(n);
  cudaMemcpy(back.data(), out, n * sizeof(float), cudaMemcpyDeviceToHost);
  check(back[0] == 3.0f && back[n - 1] == 3.0f, "scale: the kernel computed under instrumentation");

  r = recordOf([&] { launch(broadcastKernel, dim3(4), dim3(256), out, (const float*)in); });
  check(r.globalReadBytes == 4096 && r.readSectors == 1 && r.blockReadSectors == 4,
        "broadcast: 1024 requests of 4 bytes, one sector, one per block (" + str(r.globalReadBytes) + ", " +
            str(r.readSectors) + ", " + str(r.blockReadSectors) + ")");
  check(r.globalWriteBytes == 4096 && r.writeSectors == 128, "broadcast: 4096 bytes written in 128 sectors");

  // Host copies are not kernel traffic; they are copy records.
  evit_simt::clearCopyRecords();
  float* pinned = nullptr;
  cudaMallocHost(&pinned, n * sizeof(float));
  cudaMemcpy(in, pinned, n * sizeof(float), cudaMemcpyHostToDevice);
  cudaMemcpy(host.data(), in, n * sizeof(float), cudaMemcpyDeviceToHost);
  const auto c = evit_simt::copyRecords();
  check(c.size() == 2 && c[0].kind == cudaMemcpyHostToDevice && c[0].hostPinned && c[0].bytes == 4000 &&
            c[1].kind == cudaMemcpyDeviceToHost && !c[1].hostPinned,
        "copy records: a pinned host-to-device and a pageable device-to-host copy, with their bytes");
  cudaFreeHost(pinned);
  cudaFree(in);
  cudaFree(out);
}

// The tensor-core GEMM: M x N x K on whole tiles is M N K / (16 8 16) warp mma.sync.
void knownMma(int M, int N, int K) {
  __half *x = nullptr, *W = nullptr, *y = nullptr;
  float* b = nullptr;
  cudaMalloc(&x, (size_t)M * K * 2);
  cudaMalloc(&W, (size_t)N * K * 2);
  cudaMalloc(&y, (size_t)M * N * 2);
  cudaMalloc(&b, (size_t)N * 4);
  std::vector<__half> hx((size_t)M * K, __float2half(0.5f)), hW((size_t)N * K, __float2half(0.25f));
  std::vector<float> hb(N, 1.0f);
  cudaMemcpy(x, hx.data(), hx.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(W, hW.data(), hW.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(b, hb.data(), hb.size() * 4, cudaMemcpyHostToDevice);
  const auto r = recordOf([&] { evit::cuda::linear<__half>(y, x, W, b, M, N, K, evit::cuda::Epilogue::Bias, nullptr); });
  const uint64_t want = (uint64_t)M * N * K / (16 * 8 * 16);
  check(r.mma == want, "GEMM " + str(M) + "x" + str(N) + "x" + str(K) + ": " + str(want) + " mma.sync (" + str(r.mma) + ", " +
                           r.kernel + ")");
  // Every element of x and W is read at least once, each output written once, in f16.
  check(32 * r.readSectors >= (uint64_t)(M + N) * K * 2 && r.writeSectors * 32 == (uint64_t)M * N * 2 &&
            r.globalWriteBytes == (uint64_t)M * N * 2,
        "GEMM: unique sectors cover x and W, and exactly the output (" + str(32 * r.readSectors) + " read, " +
            str(32 * r.writeSectors) + " written)");
  check(r.globalReadBytes >= r.cpAsyncBytes && r.cpAsyncBytes > 0, "GEMM: cp.async sources count as global reads");
  std::vector<__half> hy((size_t)M * N);
  cudaMemcpy(hy.data(), y, hy.size() * 2, cudaMemcpyDeviceToHost);
  const float expect = 1.0f + 0.125f * K;
  check(__half2float(hy[0]) == expect && __half2float(hy.back()) == expect, "GEMM: computed under instrumentation");
  cudaFree(x);
  cudaFree(W);
  cudaFree(y);
  cudaFree(b);
}

struct Totals {
  uint64_t mma = 0, read = 0, write = 0, blockRead = 0, blocks = 0;
  bool sampled = false;
};

template <class Launch>
Totals totalsOf(const evit_simt::Sampling& s, Launch&& launch) {
  evit_simt::setSampling(s);
  evit_simt::clearLaunchRecords();
  launch();
  cudaDeviceSynchronize();
  evit_simt::setSampling({});
  Totals t;
  for (const auto& r : evit_simt::launchRecords()) {
    t.mma += r.mma, t.read += r.globalReadBytes, t.write += r.globalWriteBytes, t.blockRead += r.blockReadSectors;
    t.blocks += r.blocksRun;
    t.sampled |= r.sampled;
  }
  return t;
}

double relErr(uint64_t a, uint64_t b) { return b ? std::fabs((double)a - (double)b) / (double)b : (a ? 1.0 : 0.0); }

void sampler() {
  // GEMMs with partial tiles along both dimensions: counts of a sampled launch scale to the grid.
  const int M = 1000, N = 520, K = 64;
  __half *x = nullptr, *W = nullptr, *y = nullptr;
  float* b = nullptr;
  cudaMalloc(&x, (size_t)M * K * 2);
  cudaMalloc(&W, (size_t)N * K * 2);
  cudaMalloc(&y, (size_t)M * N * 2);
  cudaMalloc(&b, (size_t)N * 4);
  cudaMemset(x, 0, (size_t)M * K * 2);
  cudaMemset(W, 0, (size_t)N * K * 2);
  cudaMemset(b, 0, (size_t)N * 4);
  auto gemm = [&] { evit::cuda::linear<__half>(y, x, W, b, M, N, K, evit::cuda::Epilogue::Bias, nullptr); };
  const Totals full = totalsOf({}, gemm), sampled = totalsOf({16, 2}, gemm);
  check(!full.sampled && sampled.sampled && sampled.blocks < full.blocks,
        "GEMM 1000x520x64: sampled runs " + str(sampled.blocks) + " of " + str(full.blocks) + " blocks");
  const double em = relErr(sampled.mma, full.mma), er = relErr(sampled.read, full.read), ew = relErr(sampled.write, full.write),
               eb = relErr(sampled.blockRead, full.blockRead);
  check(em <= 0.01 && er <= 0.01 && ew <= 0.01 && eb <= 0.01,
        "GEMM sampled vs full within 1%: mma " + std::to_string(em) + ", read " + std::to_string(er) + ", write " +
            std::to_string(ew) + ", block sectors " + std::to_string(eb));
  const Totals under = totalsOf({1u << 20, 2}, gemm);
  check(!under.sampled && under.mma == full.mma && under.read == full.read && under.write == full.write &&
            under.blocks == full.blocks,
        "GEMM under the threshold: not sampled, counts identical to the full run");
  cudaFree(x);
  cudaFree(W);
  cudaFree(y);
  cudaFree(b);

  // A grid whose blocks differ linearly along x and whose last block is its own class: exact.
  const int width = 64, rows = 40, cols = 30;
  float *in = nullptr, *out = nullptr;
  cudaMalloc(&in, (size_t)rows * width * 4);
  cudaMalloc(&out, (size_t)rows * cols * 4);
  cudaMemset(in, 0, (size_t)rows * width * 4);
  auto ramp = [&] { launch(rampKernel, dim3(cols, rows), dim3(32), out, (const float*)in, width); };
  const Totals rf = totalsOf({}, ramp), rs = totalsOf({64, 3}, ramp);
  // Reads per row: 1 + 2 + ... + (cols - 1) + 1 floats.
  const uint64_t want = (uint64_t)rows * 4 * ((uint64_t)(cols - 1) * cols / 2 + 1);
  check(rf.read == want, "ramp: full run reads " + str(want) + " bytes (" + str(rf.read) + ")");
  check(rs.sampled && rs.blocks == 5 * 5 && relErr(rs.read, rf.read) <= 0.05 && rs.write == rf.write,
        "ramp sampled (" + str(rs.blocks) + " blocks): reads within 5% (" + std::to_string(relErr(rs.read, rf.read)) +
            "), writes exact");
  cudaFree(in);
  cudaFree(out);
}

}  // namespace

int main() {
  return harness::main([] {
    knownBytes();
    knownMma(128, 128, 64);
    knownMma(256, 192, 96);
    sampler();
  });
}

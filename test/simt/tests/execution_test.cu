// The emulator's execution model and runtime: thread and block indices, barriers and warp
// collectives (and the errors for their misuse, reported with file and line instead of a
// hang), schedules, static and dynamic shared memory, launch checks as the driver makes
// them, streams, events, graph capture and its rules, fault injection, per-launch records.
#include <cfenv>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <vector>

#include "evit_simt/control.h"
#include "harness.h"

using harness::check;
using harness::contains;

// The block's dynamic shared memory, declared as the kernels do (cuda/shared_memory.cuh): in
// the global namespace, where the emulator defines the storage.
unsigned char* dynamicBytes() {
  extern __shared__ __align__(128) unsigned char evit_dynamic_shared[];
  return evit_dynamic_shared;
}

namespace {

template <class T>
T* deviceAlloc(size_t n) {
  T* p = nullptr;
  if (cudaMalloc(&p, n * sizeof(T)) != cudaSuccess) throw std::runtime_error("cudaMalloc failed");
  return p;
}

template <class T>
std::vector<T> download(const T* d, size_t n) {
  std::vector<T> h(n);
  cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost);
  return h;
}

template <class... P, class... A>
cudaError_t launch(void (*k)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, A... args) {
  cudaLaunchConfig_t c = {};
  c.gridDim = grid;
  c.blockDim = block;
  c.dynamicSmemBytes = smem;
  c.stream = s;
  return cudaLaunchKernelEx(&c, k, args...);
}

// ---- kernels -------------------------------------------------------------------------

__global__ void writeIndices(int* out) {
  const int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const int b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const int i = (b * blockDim.x * blockDim.y * blockDim.z + t) * 4;
  out[i] = threadIdx.x + 100 * threadIdx.y + 10000 * threadIdx.z;
  out[i + 1] = blockIdx.x + 100 * blockIdx.y + 10000 * blockIdx.z;
  out[i + 2] = blockDim.x + 100 * blockDim.y + 10000 * blockDim.z;
  out[i + 3] = gridDim.x + 100 * gridDim.y + 10000 * gridDim.z;
}

// Each thread publishes a value, then reads its neighbour's: race-free with the barrier,
// a race without it (what it reads then depends on the order threads run in).
template <bool kBarrier>
__global__ void neighbour(float* out) {
  float* s = reinterpret_cast<float*>(dynamicBytes());
  const int t = threadIdx.x, n = blockDim.x;
  s[t] = (float)(t + 1) + 1000.0f * blockIdx.x;
  if (kBarrier) __syncthreads();
  out[blockIdx.x * n + t] = s[(t + 1) % n];
}

__global__ void staticShared(float* out) {
  __shared__ float tile[128];
  const int t = threadIdx.x;
  tile[t] = (float)(t * t) + blockIdx.x;
  __syncthreads();
  out[blockIdx.x * 128 + t] = tile[127 - t];
}

constexpr int kPartialBarrierLine = __LINE__ + 3;
__global__ void partialBarrier(int* out) {
  if (threadIdx.x < 16) {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

constexpr int kExitWhileWaitingLine = __LINE__ + 4;
__global__ void exitWhileWaiting(int* out) {
  if (threadIdx.x == 5) return;
  out[threadIdx.x] = 1;
  __syncthreads();
  out[threadIdx.x] = 2;
}

constexpr int kDivergentShuffleLine = __LINE__ + 4;
__global__ void divergentShuffle(float* out) {
  float v = (float)threadIdx.x;
  if (threadIdx.x % 32 < 16)
    v = __shfl_xor_sync(0xFFFFFFFFu, v, 1);
  else
    v = __shfl_xor_sync(0xFFFFFFFFu, v, 2);
  out[threadIdx.x] = v;
}

constexpr int kMismatchedMaskLine = __LINE__ + 3;
__global__ void mismatchedMasks(int* out) {
  const int lane = threadIdx.x % 32;
  __syncwarp(lane < 16 ? 0x0000FFFFu : 0xFFFFFFFFu);
  out[threadIdx.x] = lane;
}

__global__ void splitMasks(int* out) {
  const int lane = threadIdx.x % 32;
  const unsigned half = lane < 16 ? 0x0000FFFFu : 0xFFFF0000u;
  __syncwarp(half);
  out[threadIdx.x] = __shfl_sync(half, lane * 10, lane < 16 ? 3 : 7, 16);
}

constexpr int kExitedLaneLine = __LINE__ + 4;
__global__ void shuffleNamesExitedLane(float* out) {
  if (threadIdx.x == 31) return;
  float v = (float)threadIdx.x;
  v = __shfl_down_sync(0xFFFFFFFFu, v, 1);
  out[threadIdx.x] = v;
}

constexpr int kBarrierVsShuffleLine = __LINE__ + 4;
__global__ void barrierVersusShuffle(float* out) {
  float v = (float)threadIdx.x;
  if (threadIdx.x == 0)
    __syncthreads();
  else
    v = __shfl_sync(0xFFFFFFFFu, v, 0);
  out[threadIdx.x] = v;
}

__global__ void collectives(int* out) {
  const int lane = threadIdx.x % 32, t = threadIdx.x;
  int* o = out + t * 16;
  o[0] = __shfl_sync(0xFFFFFFFFu, lane * 3, 5);
  o[1] = __shfl_sync(0xFFFFFFFFu, lane * 3, lane + 9, 8);
  o[2] = __shfl_up_sync(0xFFFFFFFFu, lane, 3);
  o[3] = __shfl_up_sync(0xFFFFFFFFu, lane, 3, 16);
  o[4] = __shfl_down_sync(0xFFFFFFFFu, lane, 5);
  o[5] = __shfl_down_sync(0xFFFFFFFFu, lane, 5, 8);
  o[6] = __shfl_xor_sync(0xFFFFFFFFu, lane, 6);
  o[7] = __shfl_xor_sync(0xFFFFFFFFu, lane, 12, 8);
  o[8] = (int)__ballot_sync(0xFFFFFFFFu, lane % 3 == 0);
  o[9] = __any_sync(0xFFFFFFFFu, lane == 17);
  o[10] = __all_sync(0xFFFFFFFFu, lane < 31);
  o[11] = __all_sync(0xFFFFFFFFu, lane < 32);
  o[12] = __syncthreads_count(t % 5 == 0);
  o[13] = __syncthreads_and(t < 1000);
  o[14] = __syncthreads_or(t == 63);
  double d = 1.5 * lane;
  o[15] = (int)(__shfl_xor_sync(0xFFFFFFFFu, d, 1) * 2);
}

// Each fiber keeps its own floating-point environment across switches.
__global__ void roundingModes(float* out, float x) {
  if (threadIdx.x == 0) std::fesetround(FE_DOWNWARD);
  __syncthreads();
  volatile float one = 1.0f, v = x;
  out[threadIdx.x] = one / v;
  __syncthreads();
  if (threadIdx.x == 0) std::fesetround(FE_TONEAREST);
}

__global__ void bigShared(float* out) {
  float* s = reinterpret_cast<float*>(dynamicBytes());
  s[threadIdx.x] = 1.0f;
  __syncthreads();
  out[threadIdx.x] = s[(threadIdx.x + 1) % blockDim.x];
}

__global__ void scale(float* x, float f, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] *= f;
}

// ---- checks --------------------------------------------------------------------------

void indices() {
  const dim3 grid(3, 2, 2), block(4, 3, 2);
  const int threads = 3 * 2 * 2 * 4 * 3 * 2;
  int* d = deviceAlloc<int>(threads * 4);
  check(launch(writeIndices, grid, block, 0, nullptr, d) == cudaSuccess, "3-D grid of 3-D blocks launches");
  auto h = download(d, threads * 4);
  bool ok = true;
  for (unsigned bz = 0; bz < 2; ++bz)
    for (unsigned by = 0; by < 2; ++by)
      for (unsigned bx = 0; bx < 3; ++bx)
        for (unsigned tz = 0; tz < 2; ++tz)
          for (unsigned ty = 0; ty < 3; ++ty)
            for (unsigned tx = 0; tx < 4; ++tx) {
              const int b = bx + 3 * (by + 2 * bz), t = tx + 4 * (ty + 3 * tz), i = (b * 24 + t) * 4;
              ok = ok && h[i] == (int)(tx + 100 * ty + 10000 * tz) && h[i + 1] == (int)(bx + 100 * by + 10000 * bz) &&
                   h[i + 2] == 4 + 300 + 20000 && h[i + 3] == 3 + 200 + 20000;
            }
  check(ok, "threadIdx, blockIdx, blockDim and gridDim of every thread");
  cudaFree(d);
}

void schedulesAndRaces() {
  const int n = 256, blocks = 3;
  float* d = deviceAlloc<float>(n * blocks);
  std::vector<std::vector<float>> clean, racy;
  for (const auto& s : harness::schedules()) {
    evit_simt::setSchedule(s);
    launch(neighbour<true>, blocks, n, n * sizeof(float), nullptr, d);
    clean.push_back(download(d, n * blocks));
    launch(neighbour<false>, blocks, n, n * sizeof(float), nullptr, d);
    racy.push_back(download(d, n * blocks));
  }
  bool right = true;
  for (int b = 0; b < blocks; ++b)
    for (int t = 0; t < n; ++t) right = right && clean[0][b * n + t] == (float)((t + 1) % n + 1) + 1000.0f * b;
  check(right, "with the barrier every thread reads its neighbour's value");
  check(clean[0] == clean[1] && clean[0] == clean[2], "with the barrier forward, reverse and random:12345 agree bit for bit");
  int nanForward = 0;
  for (float v : racy[0]) nanForward += std::isnan(v);
  check(nanForward == (n - 1) * blocks,
        "without it, forward order reads the NaN of fresh shared memory (" + std::to_string(nanForward) + " threads)");
  check(std::memcmp(racy[0].data(), racy[1].data(), racy[0].size() * 4) != 0,
        "without the barrier forward and reverse order give different results");
  evit_simt::setSchedule({evit_simt::Schedule::Random, 12345});  // the same launch sequence again
  launch(neighbour<true>, blocks, n, n * sizeof(float), nullptr, d);
  launch(neighbour<false>, blocks, n, n * sizeof(float), nullptr, d);
  auto again = download(d, n * blocks);
  check(std::memcmp(again.data(), racy[2].data(), again.size() * 4) == 0, "random:12345 is repeatable");
  evit_simt::setSchedule({evit_simt::Schedule::Random, 999});
  launch(neighbour<true>, blocks, n, n * sizeof(float), nullptr, d);
  launch(neighbour<false>, blocks, n, n * sizeof(float), nullptr, d);
  again = download(d, n * blocks);
  check(std::memcmp(again.data(), racy[2].data(), again.size() * 4) != 0, "another seed gives another order");
  evit_simt::setSchedule({});
  cudaFree(d);
}

void sharedMemory() {
  float* d = deviceAlloc<float>(128 * 2);
  bool ok = true;
  for (const auto& s : harness::schedules()) {
    evit_simt::setSchedule(s);
    ok = ok && launch(staticShared, 2, 128, 0, nullptr, d) == cudaSuccess;
    auto h = download(d, 256);
    for (int b = 0; b < 2; ++b)
      for (int t = 0; t < 128; ++t) ok = ok && h[b * 128 + t] == (float)((127 - t) * (127 - t)) + b;
  }
  evit_simt::setSchedule({});
  check(ok, "a block-scope static __shared__ array is shared by the block's threads, under every schedule");
  cudaFree(d);
}

// A faulting launch: the error it returns, the fault message, and the sticky state after it.
void expectFault(const std::string& what, cudaError_t got, int line, const std::vector<std::string>& parts) {
  const std::string msg = evit_simt::lastFault();
  check(got == cudaErrorLaunchFailure, what + ": the launch fails with cudaErrorLaunchFailure (got " +
                                           cudaGetErrorName(got) + ")");
  bool all = contains(msg, "tests/execution_test.cu:" + std::to_string(line));
  for (const auto& p : parts) all = all && contains(msg, p);
  check(all, what + ": the fault names the kernel and tests/execution_test.cu:" + std::to_string(line) + ": " + msg);
  check(cudaDeviceSynchronize() == cudaErrorLaunchFailure && cudaGetLastError() == cudaErrorLaunchFailure,
        what + ": the error is sticky, as a device fault is");
  evit_simt::clearStickyError();
}

void misuse() {
  int* di = deviceAlloc<int>(256);
  float* df = deviceAlloc<float>(256);
  for (const auto& s : harness::schedules()) {
    evit_simt::setSchedule(s);
    const std::string under = " (" + evit_simt::scheduleName(s) + ")";
    expectFault("a barrier reached by part of the block" + under, launch(partialBarrier, 1, 64, 0, nullptr, di),
                kPartialBarrierLine, {"partialBarrier", "__syncthreads"});
    expectFault("a thread exits while the others wait" + under, launch(exitWhileWaiting, 1, 64, 0, nullptr, di),
                kExitWhileWaitingLine, {"exitWhileWaiting", "exited"});
    expectFault("lanes at two different shuffles" + under, launch(divergentShuffle, 1, 64, 0, nullptr, df),
                kDivergentShuffleLine, {"divergent warp", "tests/execution_test.cu:" + std::to_string(kDivergentShuffleLine + 2)});
    expectFault("mismatched __syncwarp masks" + under, launch(mismatchedMasks, 1, 32, 0, nullptr, di),
                kMismatchedMaskLine, {"mismatchedMasks", "__syncwarp(mask 0xffffffff)"});
    expectFault("a shuffle naming an exited lane" + under, launch(shuffleNamesExitedLane, 1, 32, 0, nullptr, df),
                kExitedLaneLine, {"lane 31"});
    expectFault("one lane at __syncthreads, the others at a shuffle" + under,
                launch(barrierVersusShuffle, 1, 32, 0, nullptr, df), kBarrierVsShuffleLine, {"__syncthreads"});
  }
  evit_simt::setSchedule({});
  check(launch(splitMasks, 1, 64, 0, nullptr, di) == cudaSuccess, "two half-warp groups with their own masks are fine");
  auto h = download(di, 64);
  bool ok = true;
  for (int t = 0; t < 64; ++t) ok = ok && h[t] == ((t % 32 < 16) ? 3 * 10 : (16 + 7) * 10);
  check(ok, "half-warp shuffles of width 16 read lane 3 of each half");
  cudaFree(di);
  cudaFree(df);
}

void warpOps() {
  const int n = 128;
  int* d = deviceAlloc<int>(n * 16);
  std::vector<std::vector<int>> got;
  for (const auto& s : harness::schedules()) {
    evit_simt::setSchedule(s);
    launch(collectives, 1, n, 0, nullptr, d);
    got.push_back(download(d, n * 16));
  }
  evit_simt::setSchedule({});
  const auto& h = got[0];
  bool idx = true, up = true, down = true, xr = true, votes = true, bar = true;
  unsigned ballot = 0;
  for (int l = 0; l < 32; ++l)
    if (l % 3 == 0) ballot |= 1u << l;
  for (int t = 0; t < n; ++t) {
    const int l = t % 32;
    const int* o = &h[t * 16];
    idx = idx && o[0] == 15 && o[1] == ((l & ~7) + ((l + 9) & 7)) * 3;
    up = up && o[2] == (l >= 3 ? l - 3 : l) && o[3] == (l % 16 >= 3 ? l - 3 : l);
    down = down && o[4] == (l + 5 < 32 ? l + 5 : l) && o[5] == (l % 8 + 5 < 8 ? l + 5 : l);
    xr = xr && o[6] == (l ^ 6) && o[7] == ((l ^ 12) >= (l & ~7) + 8 ? l : (l ^ 12)) && o[15] == (int)(3.0 * (l ^ 1));
    votes = votes && (unsigned)o[8] == ballot && o[9] == 1 && o[10] == 0 && o[11] == 1;
    bar = bar && o[12] == 26 && o[13] == 1 && o[14] == 1;
  }
  check(idx, "__shfl_sync, full width and width 8");
  check(up && down, "__shfl_up_sync and __shfl_down_sync keep their own value past the segment edge");
  check(xr, "__shfl_xor_sync of int and double, width 8 keeps later segments out");
  check(votes, "__ballot_sync, __any_sync, __all_sync");
  check(bar, "__syncthreads_count, _and, _or");
  check(got[0] == got[1] && got[0] == got[2], "collectives agree across the three schedules");

  float* f = deviceAlloc<float>(64);
  launch(roundingModes, 1, 64, 0, nullptr, f, 3.0f);
  auto r = download(f, 64);
  const float nearest = 1.0f / 3.0f;
  check(r[0] < nearest && r[1] == nearest && r[63] == nearest,
        "a fiber's rounding mode (MXCSR) stays its own across switches");
  cudaFree(f);
  cudaFree(d);
}

void launchChecks() {
  float* d = deviceAlloc<float>(2048);
  auto err = [&](dim3 g, dim3 b, size_t smem) { return launch(bigShared, g, b, smem, nullptr, d); };
  check(err(1, 1024, 4096) == cudaSuccess, "1024 threads per block launch");
  check(err(1, 1025, 4096) == cudaErrorInvalidConfiguration, "1025 threads per block: cudaErrorInvalidConfiguration");
  check(err(1, dim3(1, 1, 65), 4096) == cudaErrorInvalidConfiguration, "block z = 65: cudaErrorInvalidConfiguration");
  check(err(1, dim3(32, 33, 1), 4096) == cudaErrorInvalidConfiguration, "32 × 33 threads: cudaErrorInvalidConfiguration");
  check(err(dim3(1, 65536, 1), 32, 128) == cudaErrorInvalidConfiguration, "grid y = 65536: cudaErrorInvalidConfiguration");
  check(err(dim3(1, 1, 65536), 32, 128) == cudaErrorInvalidConfiguration, "grid z = 65536: cudaErrorInvalidConfiguration");
  check(err(dim3(0, 1, 1), 32, 128) == cudaErrorInvalidConfiguration, "an empty grid: cudaErrorInvalidConfiguration");
  check(cudaGetLastError() == cudaErrorInvalidConfiguration && cudaGetLastError() == cudaSuccess,
        "cudaGetLastError reports a configuration error once (not sticky)");
  check(err(1, 64, 48 * 1024) == cudaSuccess, "48 KiB of dynamic shared memory need no opt-in");
  check(err(1, 64, 49 * 1024) == cudaErrorInvalidValue, "49 KiB without the attribute: cudaErrorInvalidValue");
  check(cudaFuncSetAttribute(bigShared, cudaFuncAttributeMaxDynamicSharedMemorySize, 232449) == cudaErrorInvalidValue,
        "an opt-in past the device's 232448 bytes: cudaErrorInvalidValue");
  check(cudaFuncSetAttribute(bigShared, cudaFuncAttributeMaxDynamicSharedMemorySize, 100 * 1024) == cudaSuccess,
        "opting in to 100 KiB");
  check(err(1, 64, 49 * 1024) == cudaSuccess && err(1, 64, 100 * 1024) == cudaSuccess,
        "49 KiB and 100 KiB launch after the opt-in");
  check(err(1, 64, 100 * 1024 + 1) == cudaErrorInvalidValue, "one byte over the opt-in: cudaErrorInvalidValue");
  check(cudaFuncSetAttribute(bigShared, cudaFuncAttributeMaxDynamicSharedMemorySize, 232448) == cudaSuccess &&
            err(1, 64, 232448) == cudaSuccess && err(1, 64, 232449) == cudaErrorInvalidValue,
        "227 KiB is the most a block can have");
  cudaFuncAttributes fa;
  check(cudaFuncGetAttributes(&fa, bigShared) == cudaSuccess && fa.maxDynamicSharedSizeBytes == 232448,
        "cudaFuncGetAttributes reports the opt-in");
  cudaGetLastError();
  check(err(1, 64, 4096) == cudaSuccess && cudaGetLastError() == cudaSuccess, "configuration errors are not sticky");
  cudaFree(d);
}

void device() {
  int n = 0, v = 0, dev = -1;
  cudaDeviceProp p;
  check(cudaGetDeviceCount(&n) == cudaSuccess && n == 1 && cudaGetDevice(&dev) == cudaSuccess && dev == 0,
        "one device, current device 0");
  check(cudaGetDeviceProperties(&p, 0) == cudaSuccess && p.major == 9 && p.minor == 0 &&
            p.multiProcessorCount == 132 && p.sharedMemPerBlockOptin == 232448 && contains(p.name, "SIMT"),
        std::string("properties of an sm_90 device with 132 SMs: ") + p.name);
  check(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0) == cudaSuccess && v == 232448,
        "cudaDevAttrMaxSharedMemoryPerBlockOptin = 232448");
  check(cudaDriverGetVersion(&v) == cudaSuccess && v == 13000 && cudaRuntimeGetVersion(&v) == cudaSuccess && v == 13000,
        "driver and runtime of CUDA 13.0");
  check(cudaSetDevice(1) == cudaErrorInvalidDevice, "cudaSetDevice(1): cudaErrorInvalidDevice");
  auto cfg = evit_simt::deviceConfig();
  auto none = cfg;
  none.deviceCount = 0;
  evit_simt::setDeviceConfig(none);
  check(cudaGetDeviceCount(&n) == cudaErrorNoDevice && n == 0, "a configuration without devices: cudaErrorNoDevice");
  evit_simt::setDeviceConfig(cfg);
  cudaGetLastError();
}

void memory() {
  const auto before = evit_simt::counters();
  float* d = deviceAlloc<float>(16);
  void* pinned = nullptr;
  cudaMallocHost(&pinned, 64);
  std::vector<float> host(16, 2.0f);
  check(evit_simt::counters().liveDeviceAllocations == before.liveDeviceAllocations + 1 &&
            evit_simt::counters().livePinnedAllocations == before.livePinnedAllocations + 1,
        "allocations are counted");
  check(cudaMemcpy(host.data(), host.data() + 8, 16, cudaMemcpyHostToDevice) == cudaErrorInvalidValue,
        "a host-to-device copy into host memory: cudaErrorInvalidValue");
  check(cudaMemcpy(d, host.data(), 68, cudaMemcpyHostToDevice) == cudaErrorInvalidValue,
        "a copy running 4 bytes past the allocation: cudaErrorInvalidValue");
  check(cudaMemcpy(d, host.data(), 64, cudaMemcpyHostToDevice) == cudaSuccess &&
            cudaMemcpy(pinned, d, 64, cudaMemcpyDeviceToHost) == cudaSuccess &&
            static_cast<float*>(pinned)[15] == 2.0f,
        "host → device → pinned host");
  check(cudaMemset(d, 0, 64) == cudaSuccess && download(d, 16)[3] == 0.0f, "cudaMemset");
  int stack = 0;
  check(cudaFree(&stack) == cudaErrorInvalidValue, "freeing memory cudaMalloc did not return: cudaErrorInvalidValue");
  check(cudaFreeHost(d) == cudaErrorInvalidValue, "cudaFreeHost of device memory: cudaErrorInvalidValue");
  float* fresh = deviceAlloc<float>(4);
  check(std::isnan(download(fresh, 4)[2]), "fresh device memory reads as NaN");
  cudaFree(fresh);
  cudaFree(d);
  cudaFreeHost(pinned);
  cudaGetLastError();
  check(evit_simt::counters().liveDeviceAllocations == before.liveDeviceAllocations &&
            evit_simt::counters().livePinnedAllocations == before.livePinnedAllocations,
        "every allocation of these checks was freed");
}

void streamsAndGraphs() {
  const int n = 300;
  float* d = deviceAlloc<float>(n);
  std::vector<float> ones(n, 1.0f), out(n);
  cudaStream_t s;
  cudaEvent_t e0, e1;
  check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess && cudaEventCreate(&e0) == cudaSuccess &&
            cudaEventCreate(&e1) == cudaSuccess,
        "a non-blocking stream and two events");
  cudaMemcpyAsync(d, ones.data(), n * 4, cudaMemcpyHostToDevice, s);
  cudaEventRecord(e0, s);
  launch(scale, 3, 128, 0, s, d, 3.0f, n);
  cudaEventRecord(e1, s);
  cudaMemcpyAsync(out.data(), d, n * 4, cudaMemcpyDeviceToHost, s);
  float ms = -1;
  check(cudaStreamSynchronize(s) == cudaSuccess && out[n - 1] == 3.0f, "work on a stream runs in order");
  check(cudaEventElapsedTime(&ms, e0, e1) == cudaSuccess && ms >= 0, "events time the work between them");

  // Capture: nothing runs until the graph is launched, and each launch reads the data of its time.
  evit_simt::clearLaunchRecords();
  const auto c0 = evit_simt::counters();
  check(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess, "capture begins");
  cudaStreamCaptureStatus st;
  check(cudaStreamIsCapturing(s, &st) == cudaSuccess && st == cudaStreamCaptureStatusActive, "the stream is capturing");
  cudaMemcpyAsync(d, ones.data(), n * 4, cudaMemcpyHostToDevice, s);
  launch(scale, 3, 128, 0, s, d, 5.0f, n);
  cudaMemcpyAsync(out.data(), d, n * 4, cudaMemcpyDeviceToHost, s);
  check(evit_simt::launchRecords().empty() && out[0] == 3.0f, "captured work has not run");
  // Another host thread may use the device meanwhile: a thread-local capture is not disturbed.
  std::thread other([] {
    void* p = nullptr;
    cudaMalloc(&p, 16);
    cudaFree(p);
  });
  other.join();
  cudaGraph_t g = nullptr;
  cudaGraphExec_t x = nullptr;
  check(cudaStreamEndCapture(s, &g) == cudaSuccess && g && cudaGraphInstantiate(&x, g, 0) == cudaSuccess,
        "capture ends in a graph, which instantiates");
  ones.assign(n, 2.0f);
  check(cudaGraphLaunch(x, s) == cudaSuccess && cudaStreamSynchronize(s) == cudaSuccess && out[7] == 10.0f,
        "the replay reads the host buffer as it is at replay time");
  cudaGraphLaunch(x, s);
  const auto recs = evit_simt::launchRecords();
  const auto c1 = evit_simt::counters();
  check(recs.size() == 2 && recs[0].fromGraph && contains(recs[0].kernel, "scale") && recs[0].grid.x == 3 &&
            recs[0].block.x == 128,
        "two replays, two launch records from the graph: " + (recs.empty() ? std::string() : recs[0].kernel));
  check(c1.capturesCompleted == c0.capturesCompleted + 1 && c1.graphLaunches == c0.graphLaunches + 2 &&
            c1.launchesSubmitted == c0.launchesSubmitted + 1 && c1.launchesExecuted == c0.launchesExecuted + 2,
        "counters: one capture, one launch submitted, two graph launches executing it");
  cudaGraphExecDestroy(x);
  cudaGraphDestroy(g);

  // What a capture sequence forbids invalidates it.
  cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal);
  void* p = nullptr;
  check(cudaMalloc(&p, 16) == cudaErrorStreamCaptureUnsupported, "cudaMalloc inside a global capture: cudaErrorStreamCaptureUnsupported");
  check(cudaStreamEndCapture(s, &g) == cudaErrorStreamCaptureInvalidated && !g, "that capture ends invalidated");
  cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
  check(cudaStreamSynchronize(s) == cudaErrorStreamCaptureUnsupported, "synchronising a capturing stream is refused");
  check(cudaStreamEndCapture(s, &g) == cudaErrorStreamCaptureInvalidated, "and invalidates the capture");
  cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
  launch(scale, 1, 2048, 0, s, d, 1.0f, n);
  check(cudaStreamEndCapture(s, &g) == cudaErrorStreamCaptureInvalidated, "a bad launch configuration invalidates the capture");
  cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
  cudaError_t wrong = cudaSuccess;
  std::thread([&] { wrong = cudaStreamEndCapture(s, &g); }).join();
  check(wrong == cudaErrorStreamCaptureWrongThread, "a thread-local capture cannot be ended by another thread");
  check(cudaStreamEndCapture(s, &g) == cudaSuccess, "its own thread ends it");
  cudaGraphDestroy(g);
  check(cudaStreamBeginCapture(nullptr, cudaStreamCaptureModeGlobal) == cudaErrorStreamCaptureUnsupported,
        "the legacy stream cannot capture");
  cudaGetLastError();

  // Kernels on two host threads at once each run on their own fibers and shared memory.
  float* d2 = deviceAlloc<float>(256 * 8);
  float* d3 = deviceAlloc<float>(256 * 8);
  cudaError_t r2 = cudaErrorUnknown, r3 = cudaErrorUnknown;
  std::thread t2([&] {
    for (int i = 0; i < 5 && (r2 = launch(neighbour<true>, 8, 256, 1024, nullptr, d2)) == cudaSuccess; ++i) {
    }
  });
  std::thread t3([&] {
    for (int i = 0; i < 5 && (r3 = launch(neighbour<true>, 8, 256, 1024, nullptr, d3)) == cudaSuccess; ++i) {
    }
  });
  t2.join();
  t3.join();
  check(r2 == cudaSuccess && r3 == cudaSuccess && download(d2, 2048) == download(d3, 2048) &&
            download(d2, 2048)[256 * 7 + 255] == 1.0f + 7000.0f,
        "launches from two host threads at once give the same, right results");
  cudaFree(d2);
  cudaFree(d3);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaStreamDestroy(s);
  cudaFree(d);
}

void injection() {
  float* d = deviceAlloc<float>(64);
  evit_simt::failLaunches("scale", 1);
  check(launch(scale, 1, 64, 0, nullptr, d, 1.0f, 64) == cudaErrorLaunchOutOfResources,
        "an injected launch failure returns cudaErrorLaunchOutOfResources");
  check(cudaGetLastError() == cudaErrorLaunchOutOfResources && cudaGetLastError() == cudaSuccess,
        "cudaGetLastError reports it once");
  check(launch(scale, 1, 64, 0, nullptr, d, 1.0f, 64) == cudaSuccess, "only that launch fails");
  evit_simt::stickyErrorAtNextSync(cudaErrorIllegalAddress);
  check(launch(scale, 1, 64, 0, nullptr, d, 1.0f, 64) == cudaSuccess, "a launch before the sync succeeds");
  check(cudaDeviceSynchronize() == cudaErrorIllegalAddress, "the sync reports the injected cudaErrorIllegalAddress");
  check(launch(scale, 1, 64, 0, nullptr, d, 1.0f, 64) == cudaErrorIllegalAddress &&
            cudaGetLastError() == cudaErrorIllegalAddress && cudaGetLastError() == cudaErrorIllegalAddress,
        "from then on every call returns it; cudaGetLastError cannot clear it");
  evit_simt::clearStickyError();
  cudaStream_t s;
  cudaStreamCreate(&s);
  cudaGraph_t g = nullptr;
  evit_simt::failNextCapture();
  cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
  launch(scale, 1, 64, 0, s, d, 1.0f, 64);
  check(cudaStreamEndCapture(s, &g) == cudaErrorStreamCaptureInvalidated && !g, "an injected capture failure");
  cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
  check(cudaStreamEndCapture(s, &g) == cudaSuccess && g, "the next capture works");
  cudaGraphDestroy(g);
  cudaStreamDestroy(s);
  evit_simt::failAllocations(1);
  void* p = nullptr;
  check(cudaMalloc(&p, 64) == cudaErrorMemoryAllocation && !p, "an injected allocation failure");
  check(cudaMalloc(&p, 64) == cudaSuccess && p, "the next allocation works");
  cudaFree(p);
  auto cfg = evit_simt::deviceConfig();
  auto small = cfg;
  small.totalGlobalMem = 1 << 20;
  evit_simt::setDeviceConfig(small);
  check(cudaMalloc(&p, 2 << 20) == cudaErrorMemoryAllocation, "more than the device's memory: cudaErrorMemoryAllocation");
  evit_simt::setDeviceConfig(cfg);
  evit_simt::resetInjection();
  cudaGetLastError();
  cudaFree(d);
}

void records() {
  evit_simt::clearLaunchRecords();
  float* d = deviceAlloc<float>(256 * 2);
  launch(neighbour<true>, 2, 256, 1024, nullptr, d);
  const auto r = evit_simt::launchRecords();
  check(r.size() == 1 && r[0].kernel == "(anonymous namespace)::neighbour<true>" && r[0].grid.x == 2 &&
            r[0].block.x == 256 && r[0].dynamicSmemBytes == 1024 && r[0].barriers == 2 && !r[0].fromGraph &&
            r[0].result == cudaSuccess,
        "a launch record: demangled name, grid, block, shared bytes, one barrier per block: " +
            (r.empty() ? std::string() : r[0].kernel));
  check(evit_simt::kernelName(reinterpret_cast<const void*>(&scale)) == "(anonymous namespace)::scale",
        "kernel names come from the symbol table, anonymous namespaces included");
  cudaFree(d);
}

}  // namespace

int main() {
  return harness::main([] {
    indices();
    schedulesAndRaces();
    sharedMemory();
    misuse();
    warpOps();
    launchChecks();
    device();
    memory();
    streamsAndGraphs();
    injection();
    records();
  });
}

// One batch in flight on the device: a stream, the activation arena sized for the
// largest batch, pinned result buffers, profiling events and the CUDA graphs captured
// for it. A model owns a small pool of these; a forward pass holds one from start to end.
// StreamContext is what every model family's context has; each family lays out its own
// buffers in the arena (ExecutionContext: DeiT/EViT; cuda/shunted_model.cu: Shunted).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "../src/backend/backend.h"
#include "../src/backend/cuda_backend.h"
#include "device_arena.h"
#include "kernels.h"

namespace evit::cuda {

// CUDA graphs captured for one context, keyed by batch size and plan (they bake in the
// context's buffer addresses and every launch shape). Least recently used ones are dropped
// beyond a fixed count, so a stream of ever-different plans cannot grow it without bound.
class GraphCache {
 public:
  struct Entry {
    cudaGraphExec_t exec = nullptr;
    int uses = 0;  // passes seen with this key, the current one included
    uint64_t lastUse = 0;
  };
  static constexpr size_t kMaxEntries = 32;

  GraphCache() = default;
  ~GraphCache();
  GraphCache(const GraphCache&) = delete;
  GraphCache& operator=(const GraphCache&) = delete;

  // The entry for this key, created if new, its use counted.
  Entry& use(const std::vector<int>& key);

 private:
  std::map<std::vector<int>, Entry> entries_;
  uint64_t clock_ = 0;
};

// Per-op times from events recorded on the stream between ops (eager passes only).
class OpTimer {
 public:
  OpTimer(const std::vector<cudaEvent_t>& events, cudaStream_t stream);
  // Charges the time since the previous mark to profile slot `slot`.
  void lap(size_t slot);
  // After the stream has been synchronised: adds each lap's milliseconds to its slot.
  void addTo(std::vector<double>& profile) const;

 private:
  const std::vector<cudaEvent_t>& events_;
  cudaStream_t stream_;
  std::vector<size_t> slots_;
};

struct StreamContext {
  // A non-blocking stream and `laps` + 1 events (a start mark, then one per lap); the arenas are
  // allocated by allocate() once the family has laid its buffers out.
  explicit StreamContext(size_t laps);
  virtual ~StreamContext();
  StreamContext(const StreamContext&) = delete;
  StreamContext& operator=(const StreamContext&) = delete;
  // One device and one pinned allocation of the layouts' sizes; `what` names them in an out-of-memory error.
  void allocate(const ArenaLayout& deviceLayout, const ArenaLayout& hostLayout, const std::string& what);

  cudaStream_t stream = nullptr;
  DeviceArena device;
  PinnedBlock host;
  std::vector<cudaEvent_t> events;  // one more than the profile has laps
  GraphCache graphs;
};

// The DeiT/EViT family's context.
struct ExecutionContext : StreamContext {
  ExecutionContext(const ModelConfig& cfg, const CudaOptions& opts, int index);

  // Device buffers, sized for maxBatch images. "T" buffers hold the compute type.
  float* images = nullptr;      // [B, inChans, imgH, imgW]
  uint8_t* pixels = nullptr;    // the same memory as images, for a pass of uint8 images
  float* pixelLut = nullptr;    // [inChans, 256], that pass's normalisation table
  bool pixelInput = false;      // the chunk being queued came as uint8 (pixels), not fp32 (images)
  void* cols = nullptr;         // T [B * P, inChans * p * p], patchified input
  float* stream0 = nullptr;     // fp32 residual stream [B, N, C] ...
  float* stream1 = nullptr;     // ... and its ping-pong partner (also the patch embedding's output)
  void* normed = nullptr;       // T [B * N, C], LayerNorm output
  void* qkv = nullptr;          // T [B * N, 3C]
  void* attn = nullptr;         // T [B * N, C]
  void* hidden = nullptr;       // T [B * N, mlpHidden]
  float* clsProbs = nullptr;    // [B, heads, N]
  int32_t* reorgOrder = nullptr;  // [B, N - 1], token indices by rank (topkGatherFuse scratch)
  float* reorgScores = nullptr;   // [B, N - 1], their head-mean scores (topkGatherFuse scratch)
  void* headIn = nullptr;       // T [B, C], normalised class tokens
  float* logits = nullptr;      // [B, classes]
  int32_t* identity = nullptr;  // [B, P], 0..P-1 per image: origins before the first reorganisation
  int32_t* origins = nullptr;   // every dropping block's [B, kept] origins, back to back
  GemmWorkspace splitK;         // fp32 partial sums of the split-K GEMMs, sized for every GEMM of the model
  // Pinned host copies of logits and origins, filled by one asynchronous copy each.
  float* logitsHost = nullptr;
  int32_t* originsHost = nullptr;
  // Pinned staging of a chunk's input (fp32 or uint8 images, and the table): the worker thread
  // copies the request's images here, so the upload is a true asynchronous DMA that overlaps
  // the other contexts' compute instead of the runtime's staged pageable copy.
  void* inputHost = nullptr;  // room for [B, inChans, imgH, imgW] fp32
  float* pixelLutHost = nullptr;
};

}  // namespace evit::cuda

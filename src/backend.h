// The backend interface: what the binding hands a backend (config, weights, a
// per-block plan) and what it gets back. CPU and CUDA implement the same one.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace evit {

// Thrown for bad arguments; the binding turns it into a JS TypeError/RangeError.
struct ArgumentError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct ModelConfig {
  int embedDim = 0;
  int depth = 0;
  int numHeads = 0;
  int patchSize = 0;
  int inChans = 0;
  int gridH = 0;  // patches per column of the input the model is prepared for
  int gridW = 0;
  int numClasses = 0;
  int mlpHidden = 0;
  float eps = 1e-6f;

  int headDim() const { return embedDim / numHeads; }
  int numPatches() const { return gridH * gridW; }
  int imgH() const { return gridH * patchSize; }
  int imgW() const { return gridW * patchSize; }
};

struct BlockWeights {
  const float *norm1W, *norm1B;
  const float *qkvW, *qkvB;    // [3C, C], [3C]
  const float *projW, *projB;  // [C, C], [C]
  const float *norm2W, *norm2B;
  const float *fc1W, *fc1B;    // [H, C], [H]
  const float *fc2W, *fc2B;    // [C, H], [C]
};

// Views into weight storage owned elsewhere (by the prepared model).
struct WeightViews {
  const float* clsToken;  // [C]
  const float* posEmbed;  // [(1 + P) * C], already resized to the model's grid
  const float *patchW, *patchB;  // [C, inChans * p * p], [C]
  std::vector<BlockWeights> blocks;
  const float *normW, *normB;
  const float *headW, *headB;  // [classes, C], [classes]
};

// keep < 0: block runs dense. keep >= 0: reorganise to 1 + keep (+1 if fuse) tokens.
struct BlockPlan {
  int keep = -1;
  bool fuse = false;
};

struct ForwardRequest {
  const float* images = nullptr;  // [batch, inChans, imgH, imgW]
  int batch = 0;
  std::vector<BlockPlan> plan;  // one per block
  bool profile = false;         // record per-op wall times
};

// Per-op times of one forward pass, in milliseconds.
enum ProfileSlot { kLn1, kQkv, kAttention, kProj, kReorganise, kLn2, kFc1, kFc2, kSlotsPerBlock };

struct KeptTokens {
  int block;
  int perImage;                  // tokens kept after the block, class token excluded
  std::vector<int32_t> origins;  // [batch, perImage]
};

struct ForwardResult {
  std::vector<float> logits;  // [batch, numClasses]
  std::vector<KeptTokens> kept;
  // With req.profile: [patchEmbed, head, then kSlotsPerBlock per block].
  std::vector<double> profile;
};

class PreparedModel {
 public:
  virtual ~PreparedModel() = default;
  virtual const ModelConfig& config() const = 0;
  // Runs a whole batch; called from a worker thread, never the JS thread.
  virtual void forward(const ForwardRequest& req, ForwardResult& out) = 0;
};

// Token counts the plan produces, checked against the config; throws ArgumentError.
// Returns N (class token included) entering each block, plus the final count.
std::vector<int> validatePlan(const ModelConfig& cfg, const std::vector<BlockPlan>& plan);

void validateConfig(const ModelConfig& cfg);

}  // namespace evit

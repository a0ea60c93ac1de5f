// The backend interface: what the binding hands a backend (config, weights, a
// per-block plan) and what it gets back. CPU and CUDA implement the same one.
// Plain data, no N-API: the binding (src/binding) validates everything that crosses from
// JavaScript once, and a backend trusts the request it is given.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace evit {

// Thrown by the validation below (and by HostWeights) for a request that must not run; the
// binding turns it into a JS error with code EVIT_NATIVE_ARGUMENT.
struct ArgumentError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The one source of the native limits; backendInfo().limits reports them to TypeScript.
struct Limits {
  static constexpr int kMaxBatch = 4096;    // images per forward() call
  static constexpr int kMaxThreads = 1024;  // CPU pool threads
  static constexpr int kMaxStreams = 16;    // CUDA execution contexts per model
  static constexpr int kMaxPatches = 65536; // image tokens per image (a 256 × 256 patch grid)
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

// A validated pass: 1 <= batch <= Limits::kMaxBatch, images of the model's input() shape owned
// by the caller for the whole pass, and tokens = model.validatePlan(plan). The images come as
// fp32 (images) or, to a model whose takesPixels(), as uint8 with their normalisation table
// (pixels and pixelLut, src/backend/pixels.h); exactly one of images and pixels is set.
struct ForwardRequest {
  const float* images = nullptr;    // [batch, channels, height, width]
  const uint8_t* pixels = nullptr;  // [batch, channels, height, width]
  const float* pixelLut = nullptr;  // [channels, 256]: what pixel value v of channel c stands for
  int batch = 0;
  std::vector<BlockPlan> plan;  // DeiT: one per block; empty for a family that drops nothing
  std::vector<int> tokens;      // DeiT: N (class token included) entering each block, then the final N
  bool profile = false;         // record per-op wall times
};

// Per-op times of one forward pass, in milliseconds: the model's slots, then kBlockSlots per block.
enum ModelSlot { kPatchEmbed, kHead, kModelSlots };
enum BlockSlot { kLn1, kQkv, kAttention, kProj, kReorganise, kLn2, kFc1, kFc2, kBlockSlots };
inline constexpr const char* kModelSlotNames[kModelSlots] = {"patchEmbed", "head"};
inline constexpr const char* kBlockSlotNames[kBlockSlots] = {"ln1", "qkv", "attention", "proj",
                                                             "reorganise", "ln2", "fc1", "fc2"};
inline size_t profileSize(int depth) { return kModelSlots + (size_t)depth * kBlockSlots; }
inline size_t profileSlot(int block, BlockSlot s) { return kModelSlots + (size_t)block * kBlockSlots + s; }

struct KeptTokens {
  int block;
  int perImage;                  // tokens kept after the block, class token excluded
  std::vector<int32_t> origins;  // [batch, perImage]
};

struct ForwardResult {
  std::vector<float> logits;  // [batch, numClasses]
  std::vector<KeptTokens> kept;
  // With req.profile: DeiT: profileSize(depth) times, indexed by ModelSlot and profileSlot();
  // another family: its own slots (shunted.h).
  std::vector<double> profile;
};

// One input image: channels × height × width floats, NCHW.
struct InputShape {
  int channels = 0, height = 0, width = 0;
  size_t floats() const { return (size_t)channels * height * width; }
};

// The binding's checks of what JavaScript sends; both throw ArgumentError naming the problem.
// validateConfig: every dimension positive and within the range buffer sizes are computed in.
void validateConfig(const ModelConfig& cfg);
// Token counts the plan produces, checked against the config: N (class token included)
// entering each block, plus the final count.
std::vector<int> validatePlan(const ModelConfig& cfg, const std::vector<BlockPlan>& plan);

// A model of any family, ready to run. What the binding needs to check a request (input(),
// numClasses(), planLength(), validatePlan()) defaults to the DeiT/EViT family's config();
// other families override all four and have no config().
class PreparedModel {
 public:
  virtual ~PreparedModel() = default;
  // The DeiT/EViT configuration; a model of another family throws std::logic_error.
  virtual const ModelConfig& config() const;
  virtual InputShape input() const {
    const ModelConfig& c = config();
    return {c.inChans, c.imgH(), c.imgW()};
  }
  virtual int numClasses() const { return config().numClasses; }
  // Entries of a request's plan (keep/fuse): one per block that may drop tokens; 0 for a family
  // that drops none.
  virtual int planLength() const { return config().depth; }
  // ForwardRequest::tokens for this plan, or ArgumentError naming what is wrong with it.
  virtual std::vector<int> validatePlan(const std::vector<BlockPlan>& plan) const {
    return evit::validatePlan(config(), plan);
  }
  // Whether forward() takes ForwardRequest::pixels; the binding expands uint8 images to fp32 for
  // a model that does not.
  virtual bool takesPixels() const { return false; }
  // Activation memory the backend holds between passes (host arena, or device arenas), in bytes.
  virtual size_t activationBytes() const = 0;
  // Runs a whole batch; called from a worker thread, never the JS thread.
  virtual void forward(const ForwardRequest& req, ForwardResult& out) = 0;
};

}  // namespace evit

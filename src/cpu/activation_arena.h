// The activations of a CPU forward pass, carved from one grow-only block kept between passes:
// fresh buffers per pass cost page faults and zeroing on every call. One pass at a time uses it
// (the pool's pass lock). Passes run in chunks of as many images as fit kBudget, so a huge batch
// does not leave a huge arena behind.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>

#include "../backend/page_buffer.h"

namespace evit::cpu {

class ActivationArena {
 public:
  // 64 MiB is 21 DeiT-S images at 224 px, whose GEMMs (4,000+ rows) already run at full speed.
  static constexpr size_t kBudget = 64u << 20;

  // Images per chunk of a batch of `batch` images that need `bytesPerImage` each (at least one).
  static int chunkImages(size_t bytesPerImage, int batch) {
    return (int)std::clamp<size_t>(kBudget / std::max<size_t>(bytesPerImage, 1), 1, (size_t)batch);
  }

  // At least `floats` floats, page-aligned; grows (freeing the old block first) when needed.
  float* reserve(size_t floats) {
    if (floats * sizeof(float) > block_.bytes()) {
      block_ = PageBuffer();
      block_ = PageBuffer(floats * sizeof(float));
      bytes_ = block_.bytes();
    }
    return block_.as<float>();
  }

  // Read on the JS thread while a pass may grow the block: a snapshot, not a synchronised value.
  size_t bytes() const { return bytes_.load(std::memory_order_relaxed); }

 private:
  PageBuffer block_;
  std::atomic<size_t> bytes_{0};
};

}  // namespace evit::cpu

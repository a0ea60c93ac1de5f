// binding.testing, compiled only into the test flavour of the addon (CMake -DEVIT_TESTING=ON,
// which `npm run build` passes): synchronous single-op exports for the op tests, the GPU
// tests and the microbenchmarks. The shipped binary does not carry them.
#pragma once

#include <napi.h>

#include <climits>
#include <cstdint>
#include <string>

#include "../binding/napi_args.h"

namespace evit {

// A row-strided view into a typed array, as the strided ops take their operands: `rows` rows of
// `width` floats, row r at offset + r·stride. Both arguments checked, and the view against the
// array's length (RangeError naming `what`).
struct RowView {
  int64_t offset;
  long stride;
};
inline RowView rowView(const Napi::TypedArrayOf<float>& a, const Napi::Value& offset, const Napi::Value& ld, int64_t rows,
                       int width, const std::string& what) {
  const int64_t off = intArg(offset, what + " offset", 0, INT32_MAX);
  const int64_t stride = intArg(ld, what + " row stride", width, INT32_MAX);
  if (off + (rows - 1) * stride + width > (int64_t)a.ElementLength())
    throw rangeError(a.Env(), what + " (" + std::to_string(a.ElementLength()) + " floats) is too short for " +
                                  std::to_string(rows) + " rows of " + std::to_string(width) + " at offset " +
                                  std::to_string(off) + ", row stride " + std::to_string(stride));
  return {off, (long)stride};
}

// { ops, cudaHost, cudaOps (only when the addon has the CUDA backend) }
Napi::Object DefineTesting(Napi::Env env);

// The CPU ops (src/testing/ops_binding.cc).
Napi::Object DefineOps(Napi::Env env);
// The CUDA kernels, each run once on the device (cuda/testing/cuda_ops_binding.cc).
Napi::Object DefineCudaOps(Napi::Env env);
// The CUDA kernels' host-side logic run on the CPU (cuda/testing/cuda_host_checks.cc).
Napi::Object DefineCudaHostChecks(Napi::Env env);

}  // namespace evit

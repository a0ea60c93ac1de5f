// The epilogue both GEMM kernels apply to each fp32 accumulator, in registers.
#pragma once

#include <cstdint>

#include "device_math.h"
#include "element_type.cuh"
#include "kernels.h"

namespace evit::cuda {

// out[i] for one output element, v = (x·Wᵀ)[i] + b[col] in fp32.
template <class T>
__device__ __forceinline__ void storeEpilogue(void* out, long i, float v, Epilogue ep) {
  switch (ep) {
    case Epilogue::Bias: static_cast<T*>(out)[i] = fromFloat<T>(v); break;
    case Epilogue::BiasGelu: static_cast<T*>(out)[i] = fromFloat<T>(geluErf(v)); break;
    case Epilogue::BiasResidual: static_cast<float*>(out)[i] += v; break;
    case Epilogue::BiasFloat: static_cast<float*>(out)[i] = v; break;
    case Epilogue::BiasRelu: static_cast<T*>(out)[i] = fromFloat<T>(v < 0.0f ? 0.0f : v); break;
  }
}

// out[i], out[i + 1] in one store (i even, 8-byte aligned float / 4-byte aligned T pairs).
template <class T>
__device__ __forceinline__ void storeEpiloguePair(void* out, long i, float v0, float v1, Epilogue ep) {
  if (ep == Epilogue::BiasGelu) {
    v0 = geluErf(v0);
    v1 = geluErf(v1);
  } else if (ep == Epilogue::BiasRelu) {
    v0 = v0 < 0.0f ? 0.0f : v0;  // NaN kept, as the CPU's std::max(v, 0)
    v1 = v1 < 0.0f ? 0.0f : v1;
  }
  switch (ep) {
    case Epilogue::Bias:
    case Epilogue::BiasGelu:
    case Epilogue::BiasRelu: {
      T pair[2] = {fromFloat<T>(v0), fromFloat<T>(v1)};
      if constexpr (sizeof(T) == 2)
        *reinterpret_cast<uint32_t*>(static_cast<T*>(out) + i) = *reinterpret_cast<const uint32_t*>(pair);
      else
        *reinterpret_cast<float2*>(static_cast<T*>(out) + i) = make_float2(v0, v1);
      break;
    }
    case Epilogue::BiasResidual: {
      float2* p = reinterpret_cast<float2*>(static_cast<float*>(out) + i);
      const float2 r = *p;
      *p = make_float2(r.x + v0, r.y + v1);
      break;
    }
    case Epilogue::BiasFloat: *reinterpret_cast<float2*>(static_cast<float*>(out) + i) = make_float2(v0, v1); break;
  }
}

}  // namespace evit::cuda

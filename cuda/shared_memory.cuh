// The block's dynamic shared memory (the launch's sharedBytes), as T. One declaration for every
// kernel, in the global namespace, so the SIMT emulator can provide the storage behind it.
#pragma once

template <class T>
__device__ __forceinline__ T* dynamicShared() {
  extern __shared__ __align__(128) unsigned char evit_dynamic_shared[];
  return reinterpret_cast<T*>(evit_dynamic_shared);
}

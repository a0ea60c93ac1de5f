// cudaLaunchKernelEx, the typed form CUDA 12+ declares in cuda_runtime.h: the arguments are
// converted to the kernel's parameter types and kept with it, so that the launch can run
// now or be recorded into the graph of a capturing stream and run later.
#pragma once

#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

#include "runtime_api.h"

namespace evit_simt {

// One launch's kernel and argument values; run() is one CUDA thread's call of the kernel.
struct KernelCall {
  virtual ~KernelCall() = default;
  virtual void run() = 0;
};

template <class... P>
struct KernelCallOf final : KernelCall {
  template <class... A>
  KernelCallOf(void (*k)(P...), A&&... a) : kernel(k), args(std::forward<A>(a)...) {}
  void run() override { std::apply(kernel, args); }
  void (*kernel)(P...);
  std::tuple<std::decay_t<P>...> args;
};

cudaError_t launchKernel(const cudaLaunchConfig_t* config, const void* kernel, std::shared_ptr<KernelCall> call);

}  // namespace evit_simt

template <class... ExpTypes, class... ActTypes>
cudaError_t cudaLaunchKernelEx(const cudaLaunchConfig_t* config, void (*kernel)(ExpTypes...), ActTypes&&... args) {
  static_assert(sizeof...(ExpTypes) == sizeof...(ActTypes), "cudaLaunchKernelEx: one argument per kernel parameter");
  if (!kernel) return evit_simt::launchKernel(config, nullptr, nullptr);
  return evit_simt::launchKernel(
      config, reinterpret_cast<const void*>(kernel),
      std::make_shared<evit_simt::KernelCallOf<ExpTypes...>>(kernel, std::forward<ActTypes>(args)...));
}

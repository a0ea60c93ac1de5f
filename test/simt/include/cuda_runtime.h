// Emulator stand-in for CUDA's cuda_runtime.h: kernel sources compiled with
// `g++ -x c++ -DEVIT_SIMT -D__CUDACC__ -D__CUDA_ARCH__=900 -I test/simt/include` run on the
// CPU, one fiber per CUDA thread (test/simt/README.md). Like nvcc, the build force-includes
// this header, so kernel sources see the qualifiers and built-ins without including it.
#pragma once

#include "evit_simt/qualifiers.h"
#include "evit_simt/vector_types.h"
#include "evit_simt/device_math.h"
#include "evit_simt/device.h"
#include "evit_simt/runtime_api.h"
#include "evit_simt/launch.h"

// Emulator stand-in for CUDA's cuda_runtime_api.h (test/simt/README.md).
#pragma once
#include "cuda_runtime.h"

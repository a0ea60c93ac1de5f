// Emulator stand-in for CUDA's cuda_bf16.h (test/simt/README.md).
#pragma once
#include "evit_simt/half.h"

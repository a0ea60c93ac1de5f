// Emulator stand-in for CUDA's cuda_fp16.h (test/simt/README.md).
#pragma once
#include "evit_simt/half.h"

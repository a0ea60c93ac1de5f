// What the CUDA side can see. Built from cuda/ when nvcc is present, else a stub.
#pragma once

#include <string>
#include <vector>

namespace evit {

struct CudaDevice {
  std::string name;
  int major = 0, minor = 0;
  size_t memoryBytes = 0;
};

struct CudaReport {
  bool compiled = false;   // the addon was built with the CUDA backend
  bool available = false;  // a usable device and a new-enough driver are present
  std::string reason;      // why not, when !available
  int driverVersion = 0, runtimeVersion = 0;
  std::vector<CudaDevice> devices;
};

CudaReport probeCuda();

}  // namespace evit

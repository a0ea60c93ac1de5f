// The emulated device and the runtime's error state: device properties and attributes,
// the per-thread last error and the process-wide sticky error, kernel attributes, launch
// validation as the driver does it, fault injection, and the per-launch records.
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>

#include "internal.h"

namespace evit_simt {

namespace {

constexpr size_t kDefaultSmem = 48 * 1024;

std::mutex mu;
DeviceConfig config;
bool scheduleSet = false;
Schedule scheduleValue;
cudaError_t sticky = cudaSuccess, stickyPending = cudaSuccess;
std::string faultMessage;
std::map<const void*, int> smemLimit;
std::vector<LaunchRecord> records;
long submitted = 0, executed = 0;
std::string failPattern;
int failCount = 0;
cudaError_t failError = cudaErrorLaunchOutOfResources;
std::atomic<uint64_t> ordinal{0};
thread_local cudaError_t lastError = cudaSuccess;
thread_local int currentDevice = 0;

Schedule scheduleFromEnvironment() {
  const char* v = std::getenv("EVIT_SIMT_SCHEDULE");
  if (!v || !*v) return Schedule{};
  try {
    return parseSchedule(v);
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "evit-simt: %s\n", e.what());
    std::exit(2);
  }
}

bool validDevice(int d) { return d >= 0 && d < config.deviceCount; }

bool samplingSet = false;
Sampling samplingValue;

Sampling samplingFromEnvironment() {
  const char* v = std::getenv("EVIT_SIMT_SAMPLE");
  if (!v || !*v) return Sampling{};
  char* end = nullptr;
  Sampling s;
  s.threshold = std::strtoull(v, &end, 10);
  if (end && *end == ':') s.interior = (int)std::strtol(end + 1, &end, 10);
  if (end == v || !end || *end != '\0' || s.interior < 1) {
    std::fprintf(stderr, "evit-simt: EVIT_SIMT_SAMPLE must be THRESHOLD[:INTERIOR] (blocks, interior >= 1), not '%s'\n", v);
    std::exit(2);
  }
  return s;
}

}  // namespace

Sampling sampling() {
  static const Sampling fromEnv = samplingFromEnvironment();
  std::lock_guard<std::mutex> lock(mu);
  return samplingSet ? samplingValue : fromEnv;
}

void setSampling(const Sampling& s) {
  std::lock_guard<std::mutex> lock(mu);
  samplingSet = true;
  samplingValue = s;
}

Schedule parseSchedule(const std::string& text) {
  if (text == "forward") return Schedule{Schedule::Forward, 0};
  if (text == "reverse") return Schedule{Schedule::Reverse, 0};
  if (text.rfind("random:", 0) == 0 && text.size() > 7) {
    char* end = nullptr;
    const unsigned long long seed = std::strtoull(text.c_str() + 7, &end, 10);
    if (end && *end == '\0') return Schedule{Schedule::Random, seed};
  }
  throw std::invalid_argument("EVIT_SIMT_SCHEDULE must be forward, reverse or random:SEED (a decimal seed), not '" +
                              text + "'");
}

std::string scheduleName(const Schedule& s) {
  switch (s.order) {
    case Schedule::Forward: return "forward";
    case Schedule::Reverse: return "reverse";
    case Schedule::Random: return "random:" + std::to_string(s.seed);
  }
  return "?";
}

Schedule schedule() {
  static const Schedule fromEnv = scheduleFromEnvironment();
  std::lock_guard<std::mutex> lock(mu);
  return scheduleSet ? scheduleValue : fromEnv;
}

void setSchedule(const Schedule& s) {
  std::lock_guard<std::mutex> lock(mu);
  scheduleSet = true;
  scheduleValue = s;
  ordinal = 0;  // the same launches after the same setSchedule run in the same orders
}

DeviceConfig deviceConfig() {
  std::lock_guard<std::mutex> lock(mu);
  return config;
}

void setDeviceConfig(const DeviceConfig& c) {
  if (c.sharedMemPerBlockOptin < 0 || (size_t)c.sharedMemPerBlockOptin > kMaxDynamicShared ||
      c.sharedMemPerBlockOptin < (int)kDefaultSmem)
    throw std::invalid_argument("sharedMemPerBlockOptin must be between 48 KiB and " +
                                std::to_string(kMaxDynamicShared) + " bytes");
  if (c.multiProcessorCount < 1 || c.deviceCount < 0) throw std::invalid_argument("bad device configuration");
  std::lock_guard<std::mutex> lock(mu);
  config = c;
}

std::string lastFault() {
  std::lock_guard<std::mutex> lock(mu);
  return faultMessage;
}

void clearStickyError() {
  std::lock_guard<std::mutex> lock(mu);
  sticky = stickyPending = cudaSuccess;
}

void failLaunches(const std::string& kernelPattern, int count, cudaError_t error) {
  std::lock_guard<std::mutex> lock(mu);
  failPattern = kernelPattern;
  failCount = count;
  failError = error;
}

void stickyErrorAtNextSync(cudaError_t error) {
  std::lock_guard<std::mutex> lock(mu);
  stickyPending = error;
}

void failNextCapture() { armCaptureFailure(true); }

void resetInjection() {
  {
    std::lock_guard<std::mutex> lock(mu);
    failCount = 0;
    stickyPending = cudaSuccess;
  }
  armCaptureFailure(false);
  failAllocations(0);
}

std::vector<LaunchRecord> launchRecords() {
  std::lock_guard<std::mutex> lock(mu);
  return records;
}

void clearLaunchRecords() {
  std::lock_guard<std::mutex> lock(mu);
  records.clear();
}

Counters counters() {
  Counters c;
  {
    std::lock_guard<std::mutex> lock(mu);
    c.launchesSubmitted = submitted;
    c.launchesExecuted = executed;
  }
  memoryCounters(c);
  streamCounters(c);
  return c;
}

void setStickyError(cudaError_t e, const std::string& fault) {
  std::lock_guard<std::mutex> lock(mu);
  if (!sticky) sticky = e;
  faultMessage = fault;
}

cudaError_t stickyError() {
  std::lock_guard<std::mutex> lock(mu);
  return sticky;
}

cudaError_t recordError(cudaError_t e) {
  if (e) lastError = e;
  return e;
}

void synchronisationPoint() {
  std::lock_guard<std::mutex> lock(mu);
  if (stickyPending) {
    if (!sticky) sticky = stickyPending;
    stickyPending = cudaSuccess;
  }
}

bool consumeLaunchFailure(const std::string& kernel, cudaError_t* error) {
  std::lock_guard<std::mutex> lock(mu);
  if (failCount <= 0 || kernel.find(failPattern) == std::string::npos) return false;
  --failCount;
  *error = failError;
  return true;
}

size_t dynamicSmemLimit(const void* kernel) {
  std::lock_guard<std::mutex> lock(mu);
  auto it = smemLimit.find(kernel);
  return it == smemLimit.end() ? kDefaultSmem : (size_t)it->second;
}

uint64_t nextLaunchOrdinal() { return ordinal++; }

std::atomic<uint64_t> eventsRecorded{0};
void noteEventRecorded() { ++eventsRecorded; }

void appendLaunchRecord(LaunchRecord&& r) {
  r.eventsBefore = eventsRecorded.load();
  std::lock_guard<std::mutex> lock(mu);
  ++executed;
  records.push_back(std::move(r));
}

namespace {

// The checks the driver makes of a launch configuration, with its error codes.
cudaError_t validateLaunch(const cudaLaunchConfig_t& c, const void* kernel) {
  const dim3 b = c.blockDim, g = c.gridDim;
  if (b.x == 0 || b.y == 0 || b.z == 0 || g.x == 0 || g.y == 0 || g.z == 0) return cudaErrorInvalidConfiguration;
  if (b.x > 1024 || b.y > 1024 || b.z > 64 || (unsigned long long)b.x * b.y * b.z > 1024)
    return cudaErrorInvalidConfiguration;
  if (g.x > 0x7FFFFFFFu || g.y > 65535 || g.z > 65535) return cudaErrorInvalidConfiguration;
  const size_t optin = (size_t)deviceConfig().sharedMemPerBlockOptin;
  if (c.dynamicSmemBytes > optin || c.dynamicSmemBytes > dynamicSmemLimit(kernel)) return cudaErrorInvalidValue;
  return cudaSuccess;
}

}  // namespace

cudaError_t launchKernel(const cudaLaunchConfig_t* config, const void* kernel, std::shared_ptr<KernelCall> call) {
  if (!config) return recordError(cudaErrorInvalidValue);
  if (!kernel || !call) return recordError(cudaErrorInvalidDeviceFunction);
  if (cudaError_t s = stickyError()) return recordError(s);
  if (inKernel()) return recordError(cudaErrorNotSupported);
  if (cudaError_t e = validateLaunch(*config, kernel)) {
    invalidateCapture(config->stream);
    return recordError(e);
  }
  auto spec = std::make_shared<LaunchSpec>();
  spec->kernel = kernel;
  spec->name = kernelName(kernel);
  spec->grid = config->gridDim;
  spec->block = config->blockDim;
  spec->dynamicSmemBytes = config->dynamicSmemBytes;
  spec->call = std::move(call);
  cudaError_t injected;
  if (consumeLaunchFailure(spec->name, &injected)) {
    invalidateCapture(config->stream);
    return recordError(injected);
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    ++submitted;
  }
  const cudaLaunchConfig_t c = *config;
  return submit(config->stream, Node{spec->name, [spec, c](bool fromGraph) {
                                       // The kernel's opt-in may have changed since the capture.
                                       if (cudaError_t e = validateLaunch(c, spec->kernel)) return e;
                                       return executeLaunch(*spec, fromGraph);
                                     }});
}

}  // namespace evit_simt

using namespace evit_simt;

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
#define EVIT_SIMT_NAME(x) \
  case x: return #x;
    EVIT_SIMT_NAME(cudaSuccess)
    EVIT_SIMT_NAME(cudaErrorInvalidValue)
    EVIT_SIMT_NAME(cudaErrorMemoryAllocation)
    EVIT_SIMT_NAME(cudaErrorInitializationError)
    EVIT_SIMT_NAME(cudaErrorCudartUnloading)
    EVIT_SIMT_NAME(cudaErrorInvalidConfiguration)
    EVIT_SIMT_NAME(cudaErrorInvalidDevicePointer)
    EVIT_SIMT_NAME(cudaErrorInvalidMemcpyDirection)
    EVIT_SIMT_NAME(cudaErrorInsufficientDriver)
    EVIT_SIMT_NAME(cudaErrorInvalidDeviceFunction)
    EVIT_SIMT_NAME(cudaErrorNoDevice)
    EVIT_SIMT_NAME(cudaErrorInvalidDevice)
    EVIT_SIMT_NAME(cudaErrorNoKernelImageForDevice)
    EVIT_SIMT_NAME(cudaErrorInvalidResourceHandle)
    EVIT_SIMT_NAME(cudaErrorIllegalState)
    EVIT_SIMT_NAME(cudaErrorNotReady)
    EVIT_SIMT_NAME(cudaErrorIllegalAddress)
    EVIT_SIMT_NAME(cudaErrorLaunchOutOfResources)
    EVIT_SIMT_NAME(cudaErrorLaunchTimeout)
    EVIT_SIMT_NAME(cudaErrorAssert)
    EVIT_SIMT_NAME(cudaErrorHardwareStackError)
    EVIT_SIMT_NAME(cudaErrorIllegalInstruction)
    EVIT_SIMT_NAME(cudaErrorMisalignedAddress)
    EVIT_SIMT_NAME(cudaErrorLaunchFailure)
    EVIT_SIMT_NAME(cudaErrorNotPermitted)
    EVIT_SIMT_NAME(cudaErrorNotSupported)
    EVIT_SIMT_NAME(cudaErrorStreamCaptureUnsupported)
    EVIT_SIMT_NAME(cudaErrorStreamCaptureInvalidated)
    EVIT_SIMT_NAME(cudaErrorStreamCaptureMerge)
    EVIT_SIMT_NAME(cudaErrorStreamCaptureUnmatched)
    EVIT_SIMT_NAME(cudaErrorStreamCaptureUnjoined)
    EVIT_SIMT_NAME(cudaErrorStreamCaptureIsolation)
    EVIT_SIMT_NAME(cudaErrorStreamCaptureImplicit)
    EVIT_SIMT_NAME(cudaErrorCapturedEvent)
    EVIT_SIMT_NAME(cudaErrorStreamCaptureWrongThread)
    EVIT_SIMT_NAME(cudaErrorUnknown)
#undef EVIT_SIMT_NAME
  }
  return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInsufficientDriver: return "CUDA driver version is insufficient for CUDA runtime version";
    case cudaErrorInvalidDeviceFunction: return "invalid device function";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorIllegalState: return "the operation cannot be performed in the present state";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorMisalignedAddress: return "misaligned address";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorNotSupported: return "operation not supported";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureImplicit:
      return "operation would make the legacy stream depend on a capturing blocking stream";
    case cudaErrorStreamCaptureWrongThread:
      return "attempt to terminate a thread-local capture sequence from another thread";
    default: return "unknown error";
  }
}

cudaError_t cudaGetLastError() {
  if (cudaError_t s = stickyError()) return s;
  const cudaError_t e = lastError;
  lastError = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError() {
  if (cudaError_t s = stickyError()) return s;
  return lastError;
}

cudaError_t cudaDriverGetVersion(int* v) {
  if (!v) return recordError(cudaErrorInvalidValue);
  *v = deviceConfig().driverVersion;
  return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int* v) {
  if (!v) return recordError(cudaErrorInvalidValue);
  *v = deviceConfig().runtimeVersion;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return recordError(cudaErrorInvalidValue);
  const DeviceConfig c = deviceConfig();
  *count = 0;
  if (c.driverVersion == 0) return recordError(cudaErrorInsufficientDriver);
  if (c.deviceCount == 0) return recordError(cudaErrorNoDevice);
  *count = c.deviceCount;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  if (!device) return recordError(cudaErrorInvalidValue);
  *device = currentDevice;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  std::lock_guard<std::mutex> lock(mu);
  if (!validDevice(device)) return recordError(config.deviceCount ? cudaErrorInvalidDevice : cudaErrorNoDevice);
  currentDevice = device;
  return sticky ? recordError(sticky) : cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
  if (!p) return recordError(cudaErrorInvalidValue);
  const DeviceConfig c = deviceConfig();
  if (device < 0 || device >= c.deviceCount) return recordError(cudaErrorInvalidDevice);
  std::memset(p, 0, sizeof *p);
  std::snprintf(p->name, sizeof p->name, "evit SIMT emulator (sm_90)");
  p->totalGlobalMem = c.totalGlobalMem;
  p->sharedMemPerBlock = kDefaultSmem;
  p->regsPerBlock = 65536;
  p->warpSize = 32;
  p->memPitch = 2147483647;
  p->maxThreadsPerBlock = 1024;
  p->maxThreadsDim[0] = p->maxThreadsDim[1] = 1024;
  p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 2147483647;
  p->maxGridSize[1] = p->maxGridSize[2] = 65535;
  p->totalConstMem = 65536;
  p->major = 9;
  p->minor = 0;
  p->textureAlignment = 512;
  p->multiProcessorCount = c.multiProcessorCount;
  p->canMapHostMemory = 1;
  p->concurrentKernels = 1;
  p->asyncEngineCount = 2;
  p->unifiedAddressing = 1;
  p->memoryBusWidth = 6144;
  p->l2CacheSize = 50 << 20;
  p->maxThreadsPerMultiProcessor = 2048;
  p->sharedMemPerMultiprocessor = 233472;
  p->regsPerMultiprocessor = 65536;
  p->managedMemory = 1;
  p->sharedMemPerBlockOptin = (size_t)c.sharedMemPerBlockOptin;
  p->reservedSharedMemPerBlock = 1024;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (!value) return recordError(cudaErrorInvalidValue);
  cudaDeviceProp p;
  if (cudaError_t e = cudaGetDeviceProperties(&p, device)) return e;
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = p.maxThreadsPerBlock; break;
    case cudaDevAttrMaxBlockDimX: *value = p.maxThreadsDim[0]; break;
    case cudaDevAttrMaxBlockDimY: *value = p.maxThreadsDim[1]; break;
    case cudaDevAttrMaxBlockDimZ: *value = p.maxThreadsDim[2]; break;
    case cudaDevAttrMaxGridDimX: *value = p.maxGridSize[0]; break;
    case cudaDevAttrMaxGridDimY: *value = p.maxGridSize[1]; break;
    case cudaDevAttrMaxGridDimZ: *value = p.maxGridSize[2]; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = (int)p.sharedMemPerBlock; break;
    case cudaDevAttrTotalConstantMemory: *value = (int)p.totalConstMem; break;
    case cudaDevAttrWarpSize: *value = 32; break;
    case cudaDevAttrMaxRegistersPerBlock: *value = p.regsPerBlock; break;
    case cudaDevAttrClockRate: *value = 1980000; break;
    case cudaDevAttrMultiProcessorCount: *value = p.multiProcessorCount; break;
    case cudaDevAttrConcurrentKernels: *value = 1; break;
    case cudaDevAttrL2CacheSize: *value = p.l2CacheSize; break;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *value = p.maxThreadsPerMultiProcessor; break;
    case cudaDevAttrUnifiedAddressing: *value = 1; break;
    case cudaDevAttrComputeCapabilityMajor: *value = p.major; break;
    case cudaDevAttrComputeCapabilityMinor: *value = p.minor; break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *value = (int)p.sharedMemPerMultiprocessor; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = (int)p.sharedMemPerBlockOptin; break;
    default: return recordError(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize() {
  if (cudaError_t c = checkCaptureSafe()) return recordError(c);
  synchronisationPoint();
  if (cudaError_t s = stickyError()) return recordError(s);
  return cudaSuccess;
}

cudaError_t cudaDeviceReset() {
  freeAllMemory();
  std::lock_guard<std::mutex> lock(mu);
  sticky = stickyPending = cudaSuccess;
  smemLimit.clear();
  lastError = cudaSuccess;
  return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  if (!func) return recordError(cudaErrorInvalidDeviceFunction);
  std::lock_guard<std::mutex> lock(mu);
  if (sticky) return recordError(sticky);
  switch (attr) {
    case cudaFuncAttributeMaxDynamicSharedMemorySize:
      if (value < 0 || value > config.sharedMemPerBlockOptin) return recordError(cudaErrorInvalidValue);
      smemLimit[func] = value;
      return cudaSuccess;
    case cudaFuncAttributePreferredSharedMemoryCarveout:
      if (value < -1 || value > 100) return recordError(cudaErrorInvalidValue);
      return cudaSuccess;
  }
  return recordError(cudaErrorInvalidValue);
}

cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* a, const void* func) {
  if (!a) return recordError(cudaErrorInvalidValue);
  if (!func) return recordError(cudaErrorInvalidDeviceFunction);
  std::memset(a, 0, sizeof *a);
  a->maxThreadsPerBlock = 1024;
  a->ptxVersion = a->binaryVersion = 90;
  a->maxDynamicSharedSizeBytes = (int)dynamicSmemLimit(func);
  a->preferredShmemCarveout = -1;
  return cudaSuccess;
}

// Block execution: every CUDA thread of a block is a fiber on the launching host thread.
// A round resumes each runnable fiber once, in the schedule's order, until it reaches a
// synchronisation point or exits; a barrier or warp collective completes when its last
// participant arrives, and releases them all for the next round. What cannot complete
// (a barrier some threads never reach, lanes at different collectives, a mask naming an
// exited lane) is a fault of the launch, never a hang.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <sstream>

#include "fibers.h"
#include "internal.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local uint3 blockDim;
thread_local uint3 gridDim;

// The dynamic shared memory of the block running on this host thread, sized for the
// largest opt-in limit. Kernels reach it through `extern __shared__ ... evit_dynamic_shared[]`.
alignas(128) thread_local unsigned char evit_dynamic_shared[evit_simt::kMaxDynamicShared];
// Its thread-local init function (Itanium ABI name). g++ calls it unconditionally from a
// block-scope `extern thread_local` declaration, the kernels' form, where a namespace-scope
// one tests it for null first; the storage needs no initialisation, so it does nothing.
extern "C" void _ZTH19evit_dynamic_shared() {}

namespace evit_simt {

namespace {

struct FiberAbort {};

// Per warp, one bit per lane: which lanes exist, wait at a warp collective, wait at
// __syncthreads, have exited; and the union of the masks the waiting lanes name.
struct WarpState {
  unsigned exists = 0, collective = 0, barrier = 0, exited = 0, named = 0;
};

struct Execution {
  const LaunchSpec* spec = nullptr;
  std::vector<WarpState> warps;
  LaunchRecord record;
  Fiber** fibers = nullptr;
  int threads = 0;
  uint3 block{};
  Fiber* current = nullptr;
  int exited = 0;
  // __syncthreads: arrivals so far, where, and the reduction of the barrier being formed.
  int arrived = 0;
  Site barrierSite;
  BarrierReduce reduce = BarrierReduce::None;
  int accumulator = 0, result = 0;
  bool faulted = false;
  cudaError_t faultCode = cudaSuccess;
  std::string faultMessage;
  uint64_t rng = 0;
};

thread_local Execution* exec = nullptr;

uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::string coord(uint3 v) {
  return "(" + std::to_string(v.x) + "," + std::to_string(v.y) + "," + std::to_string(v.z) + ")";
}

std::string describe(const Fiber& f) {
  std::string s = waitName(f.wait);
  if (f.wait != WaitKind::Barrier && f.wait != WaitKind::None) {
    char m[16];
    std::snprintf(m, sizeof m, "0x%08x", f.mask);
    s += std::string("(mask ") + m + ")";
  }
  return s + " at " + f.site.str();
}

// Records the launch's first fault; the caller unwinds or stops.
void recordFault(cudaError_t code, const std::string& what, const Fiber* who) {
  Execution& e = *exec;
  if (e.faulted) return;
  e.faulted = true;
  e.faultCode = code;
  std::string where = e.record.kernel + " block " + coord(e.block);
  if (who) where += " thread " + coord(who->tid);
  e.faultMessage = where + ": " + what;
}

// A lane of f's warp waiting at a collective whose mask names f (the warp's `named` has f's bit).
const Fiber* namingLane(const Execution& e, const Fiber& f) {
  const WarpState& w = e.warps[f.warp];
  for (unsigned m = w.collective; m; m &= m - 1) {
    const Fiber& o = *e.fibers[f.warp * 32 + __builtin_ctz(m)];
    if (o.mask >> f.lane & 1u) return &o;
  }
  return &f;
}

void block(Fiber& f) {
  yieldToScheduler(f, false);
  if (f.abort) throw FiberAbort{};
}

void threadExited(Fiber& f) {
  Execution& e = *exec;
  f.state = FiberState::Done;
  f.wait = WaitKind::None;
  f.openGroup.clear();  // cp.async not retired by a wait is dropped, as the thread's registers are
  f.committed.clear();
  ++e.exited;
  if (e.faulted || f.abort) return;
  if (e.arrived > 0) {
    recordFault(cudaErrorLaunchFailure,
                "exited while " + std::to_string(e.arrived) + " thread(s) wait at __syncthreads at " +
                    e.barrierSite.str() + " (a barrier must be reached by every thread of the block)",
                &f);
    return;
  }
  WarpState& w = e.warps[f.warp];
  w.exited |= 1u << f.lane;
  if (w.named >> f.lane & 1u) {
    const Fiber& o = *namingLane(e, f);
    recordFault(cudaErrorLaunchFailure,
                "lane " + std::to_string(f.lane) + " exited while lane " + std::to_string(o.lane) + " waits at " +
                    describe(o) + " naming it",
                &f);
  }
}

void fiberEntry(Fiber* f) {
  Execution& e = *exec;
  try {
    e.spec->call->run();
  } catch (const FiberAbort&) {
  } catch (const std::exception& x) {
    recordFault(cudaErrorLaunchFailure, std::string("C++ exception in the kernel: ") + x.what(), f);
  } catch (...) {
    recordFault(cudaErrorLaunchFailure, "unknown C++ exception in the kernel", f);
  }
  threadExited(*f);
  yieldToScheduler(*f, true);
}

void resume(Execution& e, Fiber& f) {
  e.current = &f;
  threadIdx = f.tid;
  resumeFiber(f);
  e.current = nullptr;
}

void deadlock(Execution& e) {
  std::map<std::string, std::pair<int, const Fiber*>> groups;
  for (int i = 0; i < e.threads; ++i) {
    const Fiber& f = *e.fibers[i];
    if (f.state != FiberState::Blocked) continue;
    auto& g = groups[describe(f)];
    if (!g.first) g.second = &f;
    ++g.first;
  }
  std::string what = "deadlock:";
  for (auto& [d, g] : groups) what += " " + std::to_string(g.first) + " thread(s) wait at " + d + " (first " + coord(g.second->tid) + ");";
  what += " " + std::to_string(e.exited) + " thread(s) have exited";
  recordFault(cudaErrorLaunchFailure, what, nullptr);
}

void abortAll(Execution& e) {
  for (int i = 0; i < e.threads; ++i) {
    Fiber& f = *e.fibers[i];
    if (f.state == FiberState::Done) continue;
    if (!f.started) {
      f.state = FiberState::Done;
      continue;
    }
    f.abort = true;
    f.state = FiberState::Ready;
    resume(e, f);
  }
}

void runBlock(Execution& e, const Schedule& sch, uint64_t ordinal, uint3 b) {
  e.block = b;
  blockIdx = b;
  const dim3 bd = e.spec->block;
  e.threads = (int)(bd.x * bd.y * bd.z);
  e.fibers = prepareFibers(e.threads, fiberEntry);
  for (int i = 0; i < e.threads; ++i) {
    Fiber& f = *e.fibers[i];
    f.linear = i;
    f.tid = uint3{(unsigned)(i % bd.x), (unsigned)(i / bd.x % bd.y), (unsigned)(i / (bd.x * bd.y))};
    f.warp = i / 32;
    f.lane = i % 32;
  }
  e.exited = e.arrived = 0;
  e.warps.assign((e.threads + 31) / 32, WarpState{});
  for (int i = 0; i < e.threads; ++i) e.warps[i / 32].exists |= 1u << (i % 32);
  // Fresh shared memory reads as NaN in every float type: a missing barrier or wait shows.
  std::memset(evit_dynamic_shared, 0xFF, e.spec->dynamicSmemBytes);
  uint64_t seed = sch.seed ^ (ordinal * 0xD1B54A32D192ED03ull) ^
                  ((uint64_t)b.x | (uint64_t)b.y << 32) ^ ((uint64_t)b.z * 0x8CB92BA72F3D8DD7ull);
  e.rng = splitmix(seed);
  std::vector<Fiber*> order;
  order.reserve(e.threads);
  while (!e.faulted) {
    order.clear();
    for (int i = 0; i < e.threads; ++i)
      if (e.fibers[i]->state == FiberState::Ready) order.push_back(e.fibers[i]);
    if (order.empty()) {
      if (e.exited < e.threads) deadlock(e);
      break;
    }
    if (sch.order == Schedule::Reverse) {
      std::reverse(order.begin(), order.end());
    } else if (sch.order == Schedule::Random) {
      for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[splitmix(e.rng) % i]);
    }
    for (Fiber* f : order) {
      if (e.faulted) break;
      if (f->state == FiberState::Ready) resume(e, *f);
    }
  }
  if (e.faulted) abortAll(e);
}

void release(Execution& e, int warp, Fiber* const* lanes, unsigned mask) {
  for (unsigned m = mask; m; m &= m - 1) {
    Fiber& f = *lanes[__builtin_ctz(m)];
    f.state = FiberState::Ready;
    f.wait = WaitKind::None;
  }
  WarpState& w = e.warps[warp];
  w.collective &= ~mask;
  w.named = 0;
  for (unsigned m = w.collective; m; m &= m - 1) w.named |= lanes[__builtin_ctz(m)]->mask;
}

}  // namespace

bool Site::operator==(const Site& o) const {
  return line == o.line && (file == o.file || (file && o.file && std::strcmp(file, o.file) == 0));
}
std::string Site::str() const { return std::string(file ? file : "?") + ":" + std::to_string(line); }

const char* waitName(WaitKind k) {
  switch (k) {
    case WaitKind::None: return "nothing";
    case WaitKind::Barrier: return "__syncthreads";
    case WaitKind::SyncWarp: return "__syncwarp";
    case WaitKind::Shuffle: return "a shuffle";
    case WaitKind::Vote: return "a vote";
    case WaitKind::Mma: return "mma.sync";
    case WaitKind::Ldmatrix: return "ldmatrix";
  }
  return "?";
}

Fiber& currentFiber() { return *exec->current; }
bool inKernel() { return exec && exec->current; }
unsigned char* sharedBase() { return evit_dynamic_shared; }
size_t sharedBytes() { return exec ? exec->spec->dynamicSmemBytes : 0; }
LaunchRecord& currentRecord() { return exec->record; }

void fault(cudaError_t code, const std::string& what, const Site& site) {
  if (!inKernel()) {
    std::fprintf(stderr, "evit-simt: %s at %s, outside any kernel\n", what.c_str(), site.str().c_str());
    std::abort();
  }
  recordFault(code, what + (site.file ? " at " + site.str() : std::string()), exec->current);
  throw FiberAbort{};
}

[[noreturn]] void trap(const char* what, const char* file, int line) {
  fault(cudaErrorLaunchFailure, what, Site{file, line});
}

void warpCollective(WaitKind kind, unsigned mask, void* payload, const Site& site, CompleteFn complete,
                    void* context) {
  if (!inKernel()) fault(cudaErrorLaunchFailure, std::string(waitName(kind)) + " outside a kernel", site);
  Execution& e = *exec;
  Fiber& me = *e.current;
  const bool sameSite = kind != WaitKind::SyncWarp;  // __syncwarp may pair different call sites (sm_70+)
  // Built only for a fault message: the common path formats nothing.
  auto mine = [&] {
    char m[16];
    std::snprintf(m, sizeof m, "0x%08x", mask);
    return std::string(waitName(kind)) + "(mask " + m + ") at " + site.str();
  };
  if (!(mask >> me.lane & 1u))
    fault(cudaErrorLaunchFailure, mine() + ": the mask does not include the calling lane " + std::to_string(me.lane),
          Site{});
  const int base = me.warp * 32;
  WarpState& w = e.warps[me.warp];
  const unsigned self = 1u << me.lane;
  auto laneNo = [](unsigned bits) { return std::to_string(__builtin_ctz(bits)); };
  if (mask & ~w.exists)
    fault(cudaErrorLaunchFailure, mine() + ": the mask names lane " + laneNo(mask & ~w.exists) +
                                      ", which this block does not have", Site{});
  if (mask & w.exited)
    fault(cudaErrorLaunchFailure, mine() + ": the mask names lane " + laneNo(mask & w.exited) + ", which has exited",
          Site{});
  if (mask & w.barrier) {
    const Fiber& o = *e.fibers[base + __builtin_ctz(mask & w.barrier)];
    fault(cudaErrorLaunchFailure,
          "divergent warp: lane " + std::to_string(me.lane) + " reaches " + mine() + " while lane " +
              std::to_string(o.lane) + " waits at " + describe(o),
          Site{});
  }
  // Lanes of the mask already waiting must wait at this collective with this mask. Every pair
  // of waiting lanes that name each other was compared when the later one arrived, so one of
  // them speaks for all.
  const unsigned waiting = w.collective & mask;
  if (waiting) {
    const Fiber& o = *e.fibers[base + __builtin_ctz(waiting)];
    if (o.wait != kind || o.mask != mask || (sameSite && !(o.site == site)))
      fault(cudaErrorLaunchFailure,
            "divergent warp: lane " + std::to_string(me.lane) + " reaches " + mine() + " while lane " +
                std::to_string(o.lane) + " waits at " + describe(o),
            Site{});
  }
  // A lane outside the mask waiting for this one would never be released.
  if ((w.named & self) && (w.collective & ~mask)) {
    for (unsigned m = w.collective & ~mask; m; m &= m - 1) {
      const Fiber& o = *e.fibers[base + __builtin_ctz(m)];
      if (o.mask & self)
        fault(cudaErrorLaunchFailure,
              "divergent warp: lane " + std::to_string(o.lane) + " waits at " + describe(o) + " naming lane " +
                  std::to_string(me.lane) + ", which reaches " + mine(),
              Site{});
    }
  }
  me.wait = kind;
  me.mask = mask;
  me.site = site;
  me.payload = payload;
  if ((waiting | self) == mask) {
    Fiber* lanes[32];
    for (unsigned m = mask; m; m &= m - 1) lanes[__builtin_ctz(m)] = e.fibers[base + __builtin_ctz(m)];
    complete(lanes, mask, context);
    release(e, me.warp, lanes, waiting);
    me.wait = WaitKind::None;
    if (kind == WaitKind::SyncWarp || kind == WaitKind::Shuffle || kind == WaitKind::Vote) ++e.record.warpCollectives;
  } else {
    me.state = FiberState::Blocked;
    w.collective |= self;
    w.named |= mask;
  }
  block(me);
}

int syncthreads(BarrierReduce op, int predicate, const char* file, int line) {
  const Site site{file, line};
  if (!inKernel()) fault(cudaErrorLaunchFailure, "__syncthreads outside a kernel", site);
  Execution& e = *exec;
  Fiber& me = *e.current;
  if (e.exited > 0)
    fault(cudaErrorLaunchFailure,
          "__syncthreads at " + site.str() + " can never complete: " + std::to_string(e.exited) +
              " thread(s) of the block have exited",
          Site{});
  if (e.arrived > 0 && !(e.barrierSite == site))
    fault(cudaErrorLaunchFailure,
          "divergent __syncthreads: reached at " + site.str() + " while " + std::to_string(e.arrived) +
              " thread(s) wait at " + e.barrierSite.str(),
          Site{});
  if (e.warps[me.warp].named >> me.lane & 1u) {
    const Fiber& o = *namingLane(e, me);
    fault(cudaErrorLaunchFailure,
          "divergent warp: lane " + std::to_string(me.lane) + " reaches __syncthreads at " + site.str() +
              " while lane " + std::to_string(o.lane) + " waits at " + describe(o) + " naming it",
          Site{});
  }
  if (e.arrived == 0) {
    e.barrierSite = site;
    e.reduce = op;
    e.accumulator = op == BarrierReduce::And ? 1 : 0;
  } else if (e.reduce != op) {
    fault(cudaErrorLaunchFailure, "threads reach different __syncthreads variants at " + site.str(), Site{});
  }
  switch (op) {
    case BarrierReduce::None: break;
    case BarrierReduce::Count: e.accumulator += predicate != 0; break;
    case BarrierReduce::And: e.accumulator &= predicate != 0; break;
    case BarrierReduce::Or: e.accumulator |= predicate != 0; break;
  }
  me.wait = WaitKind::Barrier;
  me.site = site;
  if (++e.arrived == e.threads) {
    e.result = e.accumulator;
    e.arrived = 0;
    for (int i = 0; i < e.threads; ++i) {
      e.fibers[i]->state = FiberState::Ready;
      e.fibers[i]->wait = WaitKind::None;
    }
    for (WarpState& w : e.warps) w.barrier = 0;
    ++e.record.barriers;
  } else {
    me.state = FiberState::Blocked;
    e.warps[me.warp].barrier |= 1u << me.lane;
  }
  block(me);
  return e.result;
}

void syncwarp(unsigned mask, const char* file, int line) {
  warpCollective(WaitKind::SyncWarp, mask, nullptr, Site{file, line}, [](Fiber* const*, unsigned, void*) {});
}

namespace {
struct ShuffleArgs {
  Shuffle kind;
  int arg, width;
  uint64_t bits, result;
};
struct VoteArgs {
  Vote kind;
  int predicate;
  unsigned result;
};
}  // namespace

uint64_t shuffle(Shuffle kind, unsigned mask, uint64_t bits, int arg, int width, const char* file, int line) {
  const Site site{file, line};
  if (width < 1 || width > 32 || (width & (width - 1)))
    fault(cudaErrorLaunchFailure, "shuffle width " + std::to_string(width) + " is not a power of two up to 32",
          site);
  ShuffleArgs a{kind, arg, width, bits, 0};
  warpCollective(WaitKind::Shuffle, mask, &a, site, [](Fiber* const* lanes, unsigned m, void*) {
    for (int i = 0; i < 32; ++i) {
      if (!(m >> i & 1u)) continue;
      auto& me = *static_cast<ShuffleArgs*>(lanes[i]->payload);
      const int w = me.width, segment = i & ~(w - 1);
      int src = i;
      switch (me.kind) {
        case Shuffle::Index: src = segment + (me.arg & (w - 1)); break;
        case Shuffle::Up: src = (i - segment) >= me.arg ? i - me.arg : i; break;
        case Shuffle::Down: src = (i - segment) + me.arg < w ? i + me.arg : i; break;
        case Shuffle::Xor: {
          const int x = i ^ me.arg;
          src = x >= segment + w || x < 0 ? i : x;
          break;
        }
      }
      if (src < 0 || src > 31 || !(m >> src & 1u))
        fault(cudaErrorLaunchFailure,
              "lane " + std::to_string(i) + " shuffles from lane " + std::to_string(src) +
                  ", which is not in the mask (its value is undefined)",
              lanes[i]->site);
      me.result = static_cast<ShuffleArgs*>(lanes[src]->payload)->bits;
    }
  });
  return a.result;
}

unsigned vote(Vote kind, unsigned mask, int predicate, const char* file, int line) {
  VoteArgs a{kind, predicate, 0};
  warpCollective(WaitKind::Vote, mask, &a, Site{file, line}, [](Fiber* const* lanes, unsigned m, void*) {
    unsigned ballot = 0;
    for (int i = 0; i < 32; ++i)
      if ((m >> i & 1u) && static_cast<VoteArgs*>(lanes[i]->payload)->predicate) ballot |= 1u << i;
    for (int i = 0; i < 32; ++i) {
      if (!(m >> i & 1u)) continue;
      auto& me = *static_cast<VoteArgs*>(lanes[i]->payload);
      me.result = me.kind == Vote::Ballot ? ballot : me.kind == Vote::Any ? ballot != 0 : ballot == m;
    }
  });
  return a.result;
}

unsigned activeMask() {
  if (!inKernel()) return 0;
  Execution& e = *exec;
  const Fiber& me = *e.current;
  unsigned m = 0;
  for (int j = 0; j < 32 && me.warp * 32 + j < e.threads; ++j)
    if (e.fibers[me.warp * 32 + j]->state != FiberState::Done) m |= 1u << j;
  return m;
}

// The sample along one grid dimension of n: (index, how many indices it stands for).
std::vector<std::pair<unsigned, double>> samplesAlong(unsigned n, int interior) {
  std::vector<std::pair<unsigned, double>> v;
  if (n <= (unsigned)interior + 2) {
    for (unsigned i = 0; i < n; ++i) v.emplace_back(i, 1.0);
    return v;
  }
  v.emplace_back(0, 1.0);
  const unsigned inner = n - 2;  // indices 1 .. n-2, each sample the middle of its share
  for (int k = 0; k < interior; ++k)
    v.emplace_back(1 + (unsigned)(((2 * k + 1) * (uint64_t)inner) / (2 * (uint64_t)interior)), (double)inner / interior);
  v.emplace_back(n - 1, 1.0);
  return v;
}

// Runs the stratified sample of the grid; the launch's counts become each executed block's
// counts times the number of blocks it stands for.
void runSampled(Execution& e, const Schedule& sch, uint64_t ordinal, const Sampling& smp) {
  const LaunchSpec& spec = *e.spec;
  const auto xs = samplesAlong(spec.grid.x, smp.interior), ys = samplesAlong(spec.grid.y, smp.interior),
             zs = samplesAlong(spec.grid.z, smp.interior);
  LaunchRecord& r = e.record;
  double mma = 0, ldm = 0, ldmB = 0, cpa = 0, cpaB = 0, bar = 0, coll = 0, rd = 0, wr = 0, bs = 0, bw = 0;
  for (const auto& [z, wz] : zs)
    for (const auto& [y, wy] : ys)
      for (const auto& [x, wx] : xs) {
        if (e.faulted) break;
        const LaunchRecord before = r;
        uint64_t rd0, wr0, rd1, wr1, bs0, bw0, bs1, bw1;
        countedBytes(&rd0, &wr0);
        countedBlockSectors(&bs0, &bw0);
        runBlock(e, sch, ordinal, uint3{x, y, z});
        endBlockCounting();
        countedBytes(&rd1, &wr1);
        countedBlockSectors(&bs1, &bw1);
        const double w = wx * wy * wz;
        mma += w * (double)(r.mma - before.mma);
        ldm += w * (double)(r.ldmatrix - before.ldmatrix);
        ldmB += w * (double)(r.ldmatrixBytes - before.ldmatrixBytes);
        cpa += w * (double)(r.cpAsync - before.cpAsync);
        cpaB += w * (double)(r.cpAsyncBytes - before.cpAsyncBytes);
        bar += w * (double)(r.barriers - before.barriers);
        coll += w * (double)(r.warpCollectives - before.warpCollectives);
        rd += w * (double)(rd1 - rd0);
        wr += w * (double)(wr1 - wr0);
        bs += w * (double)(bs1 - bs0);
        bw += w * (double)(bw1 - bw0);
        ++r.blocksRun;
      }
  auto round = [](double v) { return (uint64_t)std::llround(v); };
  r.mma = round(mma), r.ldmatrix = round(ldm), r.ldmatrixBytes = round(ldmB), r.cpAsync = round(cpa);
  r.cpAsyncBytes = round(cpaB), r.barriers = round(bar), r.warpCollectives = round(coll);
  r.globalReadBytes = round(rd), r.globalWriteBytes = round(wr);
  r.blockReadSectors = round(bs), r.blockWriteSectors = round(bw);
  r.sampled = true;
}

cudaError_t executeLaunch(const LaunchSpec& spec, bool fromGraph) {
  if (exec) return cudaErrorNotSupported;  // a launch from inside a kernel (dynamic parallelism)
  Execution e;
  e.spec = &spec;
  e.record.kernel = spec.name;
  e.record.grid = spec.grid;
  e.record.block = spec.block;
  e.record.dynamicSmemBytes = spec.dynamicSmemBytes;
  e.record.fromGraph = fromGraph;
  const Schedule sch = schedule();
  const uint64_t ordinal = nextLaunchOrdinal();
  exec = &e;
  gridDim = uint3{spec.grid.x, spec.grid.y, spec.grid.z};
  blockDim = uint3{spec.block.x, spec.block.y, spec.block.z};
#if defined(__SANITIZE_ADDRESS__)
  // Past the launch's dynamic size the array is not shared memory: an access there is an overrun.
  ASAN_POISON_MEMORY_REGION(evit_dynamic_shared + spec.dynamicSmemBytes, kMaxDynamicShared - spec.dynamicSmemBytes);
#endif
  const Sampling smp = sampling();
  const uint64_t blocks = (uint64_t)spec.grid.x * spec.grid.y * spec.grid.z;
  beginCounting();
  if (smp.threshold == 0 || blocks <= smp.threshold) {
    for (unsigned z = 0; z < spec.grid.z && !e.faulted; ++z)
      for (unsigned y = 0; y < spec.grid.y && !e.faulted; ++y)
        for (unsigned x = 0; x < spec.grid.x && !e.faulted; ++x) {
          runBlock(e, sch, ordinal, uint3{x, y, z});
          endBlockCounting();
        }
    e.record.blocksRun = blocks;
  } else {
    runSampled(e, sch, ordinal, smp);
  }
  pauseCounting();
  if (countingBuild()) {
    if (!e.record.sampled) {
      countedBytes(&e.record.globalReadBytes, &e.record.globalWriteBytes);
      countedBlockSectors(&e.record.blockReadSectors, &e.record.blockWriteSectors);
    }
    endCounting(e.record, liveAllocations());
  }
#if defined(__SANITIZE_ADDRESS__)
  ASAN_UNPOISON_MEMORY_REGION(evit_dynamic_shared, kMaxDynamicShared);
#endif
  exec = nullptr;
  e.record.result = e.faulted ? e.faultCode : cudaSuccess;
  appendLaunchRecord(std::move(e.record));
  if (!e.faulted) return cudaSuccess;
  std::fprintf(stderr, "evit-simt: kernel fault: %s\n", e.faultMessage.c_str());
  setStickyError(e.faultCode, e.faultMessage);
  return e.faultCode;
}

long long clockNow() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace evit_simt

long long clock64() { return evit_simt::clockNow(); }

size_t __cvta_generic_to_shared(const void* p) {
  return (size_t)(static_cast<const unsigned char*>(p) - evit_dynamic_shared);
}

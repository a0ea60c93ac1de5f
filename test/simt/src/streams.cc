// Streams, events and graphs. Work submitted to a stream runs at once on the calling host
// thread (so streams are always idle when asked), unless the stream is capturing: then it
// becomes a node of the capture's graph, and runs each time an instance is launched. The
// capture rules of CUDA that host code can trip over are kept: what may not happen inside
// a capture sequence (per capture mode), ending a capture on another thread, and a capture
// invalidated by an error.
#include <chrono>
#include <cstdio>
#include <mutex>
#include <set>
#include <thread>

#include "internal.h"

struct CUstream_st {
  unsigned flags = 0;
  bool capturing = false;
  cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
  std::thread::id thread;
  bool invalidated = false;
  std::vector<evit_simt::Node> nodes;
};
struct CUevent_st {
  unsigned flags = 0;
  bool recorded = false;
  cudaStream_t capturedIn = nullptr;  // recorded into a capture of this stream, not yet replayed
  std::chrono::steady_clock::time_point at;
};
struct CUgraph_st {
  std::vector<evit_simt::Node> nodes;
};
struct CUgraphExec_st {
  std::shared_ptr<const std::vector<evit_simt::Node>> nodes;
};

namespace evit_simt {

namespace {

std::mutex mu;
std::set<CUstream_st*> streams;
std::set<CUevent_st*> events;
std::set<CUgraph_st*> graphs;
std::set<CUgraphExec_st*> execs;
bool failCapture = false;
long captures = 0, graphLaunchCount = 0;

bool legacy(cudaStream_t s) { return s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread; }

// Captures the calling thread takes part in: every global-mode capture, and its own
// thread-local ones (caller holds mu).
std::vector<CUstream_st*> sequenceOf(std::thread::id me) {
  std::vector<CUstream_st*> v;
  for (CUstream_st* s : streams)
    if (s->capturing && (s->mode == cudaStreamCaptureModeGlobal ||
                         (s->mode == cudaStreamCaptureModeThreadLocal && s->thread == me)))
      v.push_back(s);
  return v;
}

}  // namespace

cudaError_t submit(cudaStream_t stream, Node node) {
  if (cudaError_t s = stickyError()) return recordError(s);
  {
    std::lock_guard<std::mutex> lock(mu);
    if (legacy(stream)) {
      // The legacy stream synchronises with every blocking stream: one being captured cannot take that edge.
      bool implicit = false;
      for (CUstream_st* s : sequenceOf(std::this_thread::get_id()))
        if (s->flags == cudaStreamDefault) s->invalidated = implicit = true;
      if (implicit) return recordError(cudaErrorStreamCaptureImplicit);
    } else {
      if (!streams.count(stream)) return recordError(cudaErrorInvalidResourceHandle);
      if (stream->capturing) {
        if (stream->invalidated) return recordError(cudaErrorStreamCaptureInvalidated);
        stream->nodes.push_back(std::move(node));
        return cudaSuccess;
      }
    }
  }
  const cudaError_t r = node.run(false);
  return r ? recordError(r) : cudaSuccess;
}

void invalidateCapture(cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(mu);
  if (!legacy(stream) && streams.count(stream) && stream->capturing) stream->invalidated = true;
}

cudaError_t checkCaptureSafe() {
  std::lock_guard<std::mutex> lock(mu);
  auto seq = sequenceOf(std::this_thread::get_id());
  for (CUstream_st* s : seq) s->invalidated = true;
  return seq.empty() ? cudaSuccess : cudaErrorStreamCaptureUnsupported;
}

void streamCounters(Counters& c) {
  std::lock_guard<std::mutex> lock(mu);
  c.capturesCompleted = captures;
  c.graphLaunches = graphLaunchCount;
}

void armCaptureFailure(bool on) {
  std::lock_guard<std::mutex> lock(mu);
  failCapture = on;
}

namespace {

cudaError_t synchronise() {
  if (cudaError_t c = checkCaptureSafe()) return recordError(c);
  synchronisationPoint();
  if (cudaError_t s = stickyError()) return recordError(s);
  return cudaSuccess;
}

}  // namespace

}  // namespace evit_simt

using namespace evit_simt;

cudaError_t cudaStreamCreate(cudaStream_t* s) { return cudaStreamCreateWithFlags(s, cudaStreamDefault); }

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int flags) {
  if (!s || (flags & ~cudaStreamNonBlocking)) return recordError(cudaErrorInvalidValue);
  if (cudaError_t e = stickyError()) return recordError(e);
  auto* st = new CUstream_st;
  st->flags = flags;
  std::lock_guard<std::mutex> lock(mu);
  streams.insert(st);
  *s = st;
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s) {
  std::lock_guard<std::mutex> lock(mu);
  if (legacy(s) || !streams.count(s)) return recordError(cudaErrorInvalidResourceHandle);
  if (s->capturing) return recordError(cudaErrorStreamCaptureUnsupported);
  streams.erase(s);
  delete s;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  {
    std::lock_guard<std::mutex> lock(mu);
    if (!legacy(s)) {
      if (!streams.count(s)) return recordError(cudaErrorInvalidResourceHandle);
      if (s->capturing) {
        s->invalidated = true;
        return recordError(cudaErrorStreamCaptureUnsupported);
      }
    }
  }
  return synchronise();
}

cudaError_t cudaStreamQuery(cudaStream_t s) {
  std::lock_guard<std::mutex> lock(mu);
  if (!legacy(s)) {
    if (!streams.count(s)) return recordError(cudaErrorInvalidResourceHandle);
    if (s->capturing) {
      s->invalidated = true;
      return recordError(cudaErrorStreamCaptureUnsupported);
    }
  }
  if (cudaError_t e = stickyError()) return recordError(e);
  return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int) {
  std::lock_guard<std::mutex> lock(mu);
  if ((!legacy(s) && !streams.count(s)) || !events.count(e)) return recordError(cudaErrorInvalidResourceHandle);
  if (e->capturedIn && e->capturedIn != s) {
    // Joining another stream into a capture (fork/join capture) is not emulated.
    std::fprintf(stderr, "evit-simt: cudaStreamWaitEvent on an event recorded in another stream's capture is not emulated\n");
    return recordError(cudaErrorNotSupported);
  }
  return cudaSuccess;  // every earlier piece of work has run already
}

cudaError_t cudaLaunchHostFunc(cudaStream_t s, cudaHostFn_t fn, void* userData) {
  if (!fn) return recordError(cudaErrorInvalidValue);
  return submit(s, Node{"host function", [=](bool) {
                          fn(userData);
                          return cudaSuccess;
                        }});
}

cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode) {
  if (cudaError_t e = stickyError()) return recordError(e);
  std::lock_guard<std::mutex> lock(mu);
  if (legacy(s)) return recordError(cudaErrorStreamCaptureUnsupported);
  if (!streams.count(s)) return recordError(cudaErrorInvalidResourceHandle);
  if (s->capturing) return recordError(cudaErrorIllegalState);
  s->capturing = true;
  s->mode = mode;
  s->thread = std::this_thread::get_id();
  s->invalidated = failCapture;
  failCapture = false;
  s->nodes.clear();
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* graph) {
  if (!graph) return recordError(cudaErrorInvalidValue);
  *graph = nullptr;
  std::lock_guard<std::mutex> lock(mu);
  if (legacy(s) || !streams.count(s)) return recordError(cudaErrorInvalidResourceHandle);
  if (!s->capturing) return recordError(cudaErrorIllegalState);
  if (s->mode != cudaStreamCaptureModeRelaxed && s->thread != std::this_thread::get_id())
    return recordError(cudaErrorStreamCaptureWrongThread);
  s->capturing = false;
  for (CUevent_st* e : events)
    if (e->capturedIn == s) e->capturedIn = nullptr;
  if (s->invalidated) {
    s->nodes.clear();
    return recordError(cudaErrorStreamCaptureInvalidated);
  }
  auto* g = new CUgraph_st;
  g->nodes = std::move(s->nodes);
  s->nodes.clear();
  graphs.insert(g);
  ++captures;
  *graph = g;
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t s, cudaStreamCaptureStatus* status) {
  if (!status) return recordError(cudaErrorInvalidValue);
  std::lock_guard<std::mutex> lock(mu);
  if (legacy(s)) {
    *status = cudaStreamCaptureStatusNone;
    return cudaSuccess;
  }
  if (!streams.count(s)) return recordError(cudaErrorInvalidResourceHandle);
  *status = !s->capturing ? cudaStreamCaptureStatusNone
            : s->invalidated ? cudaStreamCaptureStatusInvalidated
                             : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* e) { return cudaEventCreateWithFlags(e, cudaEventDefault); }

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int flags) {
  if (!e) return recordError(cudaErrorInvalidValue);
  if (cudaError_t s = stickyError()) return recordError(s);
  auto* ev = new CUevent_st;
  ev->flags = flags;
  std::lock_guard<std::mutex> lock(mu);
  events.insert(ev);
  *e = ev;
  return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t e) {
  std::lock_guard<std::mutex> lock(mu);
  if (!events.count(e)) return recordError(cudaErrorInvalidResourceHandle);
  events.erase(e);
  delete e;
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  {
    std::lock_guard<std::mutex> lock(mu);
    if (!events.count(e)) return recordError(cudaErrorInvalidResourceHandle);
    if (!legacy(s) && streams.count(s) && s->capturing) e->capturedIn = s;
  }
  return submit(s, Node{"cudaEventRecord", [e](bool) {
                          e->at = std::chrono::steady_clock::now();
                          e->recorded = true;
                          noteEventRecorded();
                          return cudaSuccess;
                        }});
}

cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  {
    std::lock_guard<std::mutex> lock(mu);
    if (!events.count(e)) return recordError(cudaErrorInvalidResourceHandle);
  }
  return synchronise();
}

cudaError_t cudaEventQuery(cudaEvent_t e) {
  std::lock_guard<std::mutex> lock(mu);
  if (!events.count(e)) return recordError(cudaErrorInvalidResourceHandle);
  if (cudaError_t s = stickyError()) return recordError(s);
  return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (!ms) return recordError(cudaErrorInvalidValue);
  std::lock_guard<std::mutex> lock(mu);
  if (!events.count(start) || !events.count(end)) return recordError(cudaErrorInvalidResourceHandle);
  if ((start->flags | end->flags) & cudaEventDisableTiming) return recordError(cudaErrorInvalidResourceHandle);
  if (!start->recorded || !end->recorded) return recordError(cudaErrorInvalidResourceHandle);
  *ms = std::chrono::duration<float, std::milli>(end->at - start->at).count();
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  if (!exec) return recordError(cudaErrorInvalidValue);
  *exec = nullptr;
  if (cudaError_t s = stickyError()) return recordError(s);
  std::lock_guard<std::mutex> lock(mu);
  if (!graphs.count(graph)) return recordError(cudaErrorInvalidValue);
  auto* x = new CUgraphExec_st;
  x->nodes = std::make_shared<const std::vector<Node>>(graph->nodes);
  execs.insert(x);
  *exec = x;
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
  std::shared_ptr<const std::vector<Node>> nodes;
  {
    std::lock_guard<std::mutex> lock(mu);
    if (!execs.count(exec)) return recordError(cudaErrorInvalidResourceHandle);
    nodes = exec->nodes;
    ++graphLaunchCount;
  }
  return submit(s, Node{"cudaGraphLaunch", [nodes](bool) {
                          for (const Node& n : *nodes)
                            if (cudaError_t e = n.run(true)) return e;
                          return cudaSuccess;
                        }});
}

cudaError_t cudaGraphDestroy(cudaGraph_t g) {
  std::lock_guard<std::mutex> lock(mu);
  if (!graphs.count(g)) return recordError(cudaErrorInvalidValue);
  graphs.erase(g);
  delete g;
  return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t x) {
  std::lock_guard<std::mutex> lock(mu);
  if (!execs.count(x)) return recordError(cudaErrorInvalidValue);
  execs.erase(x);
  delete x;
  return cudaSuccess;
}

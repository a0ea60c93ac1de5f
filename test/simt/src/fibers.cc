#include "fibers.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define EVIT_SIMT_ASAN 1
#else
#define EVIT_SIMT_ASAN 0
#endif

#if !defined(__x86_64__)
#error "the SIMT emulator's context switch is written for x86-64"
#endif

// evit_simt_switch(save, to): saves the callee-saved state on the current stack, stores the
// stack pointer in *save, and continues on the stack `to` (its state saved the same way).
// evit_simt_fiber_start: the first return address of a new fiber; calls
// evit_simt_fiber_entry(r12 = fiber) with a 16-byte aligned stack, and never returns.
asm(R"(
  .text
  .p2align 4
  .globl evit_simt_switch
  .hidden evit_simt_switch
  .type evit_simt_switch, @function
evit_simt_switch:
  .cfi_startproc
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .cfi_endproc
  .size evit_simt_switch, .-evit_simt_switch

  .p2align 4
  .globl evit_simt_fiber_start
  .hidden evit_simt_fiber_start
  .type evit_simt_fiber_start, @function
evit_simt_fiber_start:
  .cfi_startproc
  .cfi_undefined rip
  xorl %ebp, %ebp
  movq %r12, %rdi
  call evit_simt_fiber_entry
  ud2
  .cfi_endproc
  .size evit_simt_fiber_start, .-evit_simt_fiber_start
)");

extern "C" {
void evit_simt_switch(void** save, void* to);
void evit_simt_fiber_start();
void evit_simt_fiber_entry(evit_simt::Fiber* f);
}

namespace evit_simt {

namespace {

// Deep enough for the kernels' register arrays at -O0 and under ASan's redzones.
size_t stackBytes() {
  static const size_t bytes = [] {
    size_t kib = EVIT_SIMT_ASAN ? 1024 : 256;
    if (const char* v = std::getenv("EVIT_SIMT_STACK_KIB")) kib = std::strtoul(v, nullptr, 10);
    return (kib < 64 ? 64 : kib) << 10;
  }();
  return bytes;
}

struct Worker {
  std::vector<Fiber*> fibers;
  void (*entry)(Fiber*) = nullptr;
  void* schedulerSp = nullptr;
  void* schedulerFakeStack = nullptr;
  const void* schedulerStack = nullptr;  // the host thread's stack, as ASan reports it
  size_t schedulerStackBytes = 0;
  ~Worker() {
    for (Fiber* f : fibers) {
      munmap(f->stack - getpagesize(), f->stackBytes + getpagesize());
      delete f;
    }
  }
};

thread_local Worker worker;

Fiber* newFiber() {
  const size_t page = getpagesize(), bytes = stackBytes();
  void* m = mmap(nullptr, bytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) {
    std::fprintf(stderr, "evit-simt: cannot map a %zu KiB fiber stack\n", bytes >> 10);
    std::abort();
  }
  mprotect(m, page, PROT_NONE);  // guard page: an overflowing fiber faults instead of corrupting
  Fiber* f = new Fiber;
  f->stack = static_cast<char*>(m) + page;
  f->stackBytes = bytes;
  return f;
}

void resetContext(Fiber& f) {
  // The frame evit_simt_switch pops: csr slot, r15, r14, r13, r12 (= fiber), rbx, rbp, return address.
  uintptr_t top = (reinterpret_cast<uintptr_t>(f.stack) + f.stackBytes) & ~(uintptr_t)15;
  void** sp = reinterpret_cast<void**>(top);
  *--sp = nullptr;  // a zeroed end of stack for unwinders, keeping the start 16-byte aligned
  *--sp = nullptr;
  *--sp = reinterpret_cast<void*>(&evit_simt_fiber_start);
  *--sp = nullptr;  // rbp
  *--sp = nullptr;  // rbx
  *--sp = &f;       // r12
  *--sp = nullptr;  // r13
  *--sp = nullptr;  // r14
  *--sp = nullptr;  // r15
  --sp;
  uint32_t mxcsr;
  uint16_t fpucw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpucw));
  std::memcpy(reinterpret_cast<char*>(sp), &mxcsr, 4);
  std::memcpy(reinterpret_cast<char*>(sp) + 4, &fpucw, 2);
  f.sp = sp;
#if EVIT_SIMT_ASAN
  // A reused stack may still carry the redzones of frames that unwound by exception.
  ASAN_UNPOISON_MEMORY_REGION(f.stack, f.stackBytes);
#endif
  f.fakeStack = nullptr;
}

}  // namespace

Fiber** prepareFibers(int count, void (*entry)(Fiber*)) {
  Worker& w = worker;
  while ((int)w.fibers.size() < count) w.fibers.push_back(newFiber());
  w.entry = entry;
  for (int i = 0; i < count; ++i) {
    Fiber& f = *w.fibers[i];
    resetContext(f);
    f.state = FiberState::Ready;
    f.started = f.abort = false;
    f.wait = WaitKind::None;
    f.payload = nullptr;
    f.openGroup.clear();
    f.committed.clear();
  }
  return w.fibers.data();
}

void resumeFiber(Fiber& f) {
  Worker& w = worker;
  f.started = true;
#if EVIT_SIMT_ASAN
  __sanitizer_start_switch_fiber(&w.schedulerFakeStack, f.stack, f.stackBytes);
#endif
  evit_simt_switch(&w.schedulerSp, f.sp);
#if EVIT_SIMT_ASAN
  __sanitizer_finish_switch_fiber(w.schedulerFakeStack, nullptr, nullptr);
#endif
}

void fiberStarted(Fiber& f) {
#if EVIT_SIMT_ASAN
  Worker& w = worker;
  __sanitizer_finish_switch_fiber(f.fakeStack, &w.schedulerStack, &w.schedulerStackBytes);
#else
  (void)f;
#endif
}

void yieldToScheduler(Fiber& f, bool exiting) {
  Worker& w = worker;
#if EVIT_SIMT_ASAN
  __sanitizer_start_switch_fiber(exiting ? nullptr : &f.fakeStack, w.schedulerStack, w.schedulerStackBytes);
#else
  (void)exiting;
#endif
  evit_simt_switch(&f.sp, w.schedulerSp);
#if EVIT_SIMT_ASAN
  __sanitizer_finish_switch_fiber(f.fakeStack, &w.schedulerStack, &w.schedulerStackBytes);
#endif
}

}  // namespace evit_simt

extern "C" void evit_simt_fiber_entry(evit_simt::Fiber* f) {
  evit_simt::fiberStarted(*f);
  evit_simt::worker.entry(f);
  __builtin_unreachable();
}

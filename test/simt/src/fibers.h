// User-space fibers for the CUDA threads of a block: a small x86-64 context switch (the
// callee-saved registers, the stack pointer, MXCSR and the x87 control word), stacks
// reused across blocks, and the AddressSanitizer fiber annotations so that ASan follows
// the switches.
#pragma once

#include "internal.h"

namespace evit_simt {

// The fibers of the calling host thread, at least `count` of them, each reset to start
// `entry(fiber)` on its own stack when first resumed.
Fiber** prepareFibers(int count, void (*entry)(Fiber*));
// From the scheduler (the host thread's own stack): runs `f` until it yields or exits.
void resumeFiber(Fiber& f);
// From a fiber: back to the scheduler. `exiting`: the fiber is finished and never resumes.
void yieldToScheduler(Fiber& f, bool exiting);
// Called first thing on a fiber's own stack, when it starts.
void fiberStarted(Fiber& f);

}  // namespace evit_simt

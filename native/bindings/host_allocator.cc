// How glibc's malloc hands memory to libtorch's CPU tensors. By default glibc serves a block above its
// mmap threshold (128 KiB at first, raised as blocks are freed, never above 32 MiB) with a fresh mmap and
// gives it back with munmap on free, and it returns the free top of the heap to the system once more than
// twice the threshold is free. A training step allocates and frees the same few hundred MiB of activations
// and gradients every step, so every step pays the page faults (and the kernel's zeroing) of its whole
// working set again: on the VM we measured, 7-30% of a step's time (LoRA the most). The settings below keep freed
// memory in the process for the next step to reuse (blocks up to 32 MiB come from the heap; the heap is
// never trimmed), as PyTorch's own CPU guides do by preloading jemalloc or tcmalloc. The peak resident
// size is about the same (it is reached anyway), but can be a few percent higher where block sizes change
// from step to step and a freed block is too small to reuse (BENCHMARKS.md, "Adapter memory"); what the
// process holds after a peak is not returned.
// MIXLORA_MALLOC=default keeps glibc's defaults, as does any malloc setting of your own in the environment.
#include "common.h"

#include <climits>
#include <cstdlib>
#include <cstring>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace mx {
namespace {
const char* configured = "default";

bool UserChoseMallocSettings() {
  const char* mine = std::getenv("MIXLORA_MALLOC");
  if (mine && std::strcmp(mine, "default") == 0) return true;
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (tunables && std::strstr(tunables, "glibc.malloc.")) return true;
  for (const char* name : {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"})
    if (std::getenv(name)) return true;
  return false;
}
}  // namespace

void ConfigureHostAllocator() {
#if defined(__GLIBC__)
  if (UserChoseMallocSettings()) return;
  // 32 MiB is the largest threshold glibc accepts (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit); setting it also
  // stops glibc's dynamic adjustment, which is why the trim threshold must be set with it.
  const bool ok = mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, INT_MAX) == 1;
  configured = ok ? "reuse" : "default";
#endif
}

const char* HostAllocatorSetting() { return configured; }
}  // namespace mx

// A caching CPU allocator for large tensors (pycnn/allocator.py is its Python face).
//
// Why: glibc serves allocations above its mmap threshold (at most 32 MiB) with fresh mmaps and returns freed
// heap memory to the OS once the free top of the heap passes its trim threshold, so a training step that frees
// and reallocates the same activations every step page-faults on every one of them again: about 1 us per
// 4 KiB page, several times the cost of the memory-bound kernel that first writes the page. This allocator
// keeps freed blocks of at least kMinCachedBytes in per-size-class free lists and hands them out again, as
// PyTorch's CUDA caching allocator does for device memory. Smaller requests go to the allocator it replaced.
//
// It caches while enabled (enable()) and, for a thread inside a scope (enter_scope(): a fused network's forward
// in inference, pycnn/runtime.py), that thread's requests and frees, so inference reuses its activation memory
// from call to call.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pycnn::cpu_cache {

// glibc's initial mmap threshold: requests above it get fresh pages each time until glibc frees such a block
// itself and raises the threshold (up to 32 MiB); below it glibc's bins reuse memory.
constexpr size_t kMinCachedBytes = size_t{128} << 10;

struct Stats {
  uint64_t hits = 0;      // large requests served from the cache
  uint64_t misses = 0;    // large requests that allocated new memory
  size_t cached_bytes = 0;  // held in free lists
  size_t live_bytes = 0;    // handed out and not yet freed (large blocks only)
  size_t max_cached_bytes = 0;
  bool enabled = false;  // by enable()
  int scopes = 0;        // enter_scope() calls open on the calling thread
};

// The size class a large request is served from: n rounded up to a multiple of an eighth of the largest power
// of two not above n (at most 12.5% unused), so slightly different sizes share blocks.
size_t size_class(size_t n);

// Installs the caching allocator as c10's CPU allocator (the first time) and sets the bound on what it caches:
// a freed block that would take the cache past it goes back to the system.
void enable(size_t max_cached_bytes);
// From now on every request (but those of a thread inside a scope) goes to the allocator it replaced, which
// stays installed behind it (so that every block it handed out still comes back to it); frees the cached blocks
// (keep_cached: keeps them for the next enable(), for measurements that switch back and forth). Blocks in use
// are freed when their tensors go.
void disable(bool keep_cached);
// Frees the cached blocks (not those in use).
void empty();
// Caches this thread's requests and frees until the matching exit_scope() (scopes nest), also while disabled,
// holding at most max_cached_bytes then (enable()'s bound while enabled); installs it the first time.
void enter_scope(size_t max_cached_bytes);
void exit_scope();
// Suspends this thread's open scopes (returns how many) until resume_scopes(that number), without ending an
// epoch: tensors made inside a forward that outlive it (a BatchNorm fold, packed weights) must not hold blocks
// of the activations' cache for good.
int suspend_scopes();
void resume_scopes(int open);
// suspend_scopes() for its lifetime (pycnn.allocator.outside_scopes in C++).
class OutsideScopes {
 public:
  OutsideScopes() : open_(suspend_scopes()) {}
  ~OutsideScopes() { resume_scopes(open_); }
  OutsideScopes(const OutsideScopes&) = delete;
  OutsideScopes& operator=(const OutsideScopes&) = delete;

 private:
  int open_;
};
Stats stats();

}  // namespace pycnn::cpu_cache

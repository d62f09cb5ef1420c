// The caching CPU allocator (cpu_cache.h). One process-wide instance, never destroyed and, once installed, never
// uninstalled: "disabled" passes every request through to the allocator it replaced (but those of a thread inside
// a scope). Uninstalling would let a block handed out here be freed through the replaced allocator's deleter
// (oneDNN frees its scratch memory through whatever allocator is installed at free time), leaving this
// allocator's record of it stale.
#include "cpu_cache.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/Exception.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <iterator>
#include <limits>
#include <mutex>
#include <unordered_map>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define PYCNN_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)  // a cached block is not the program's to touch
#define PYCNN_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define PYCNN_POISON(p, n) ((void)(p), (void)(n))
#define PYCNN_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

namespace pycnn::cpu_cache {

size_t size_class(size_t n) {
  if (n < kMinCachedBytes) return n;
  const size_t top = size_t{1} << (63 - __builtin_clzll(static_cast<unsigned long long>(n)));
  const size_t step = top / 8;
  if (n > std::numeric_limits<size_t>::max() - step) return n;  // no class above it; alloc_cpu refuses it anyway
  return (n + step - 1) / step * step;
}

namespace {

// Above the default CPU allocator's priority (0), so that c10 accepts it; checked after installing, so a
// library that installed its own allocator with a higher priority gets a clear error instead of no effect.
constexpr uint8_t kPriority = 16;

class CachingAllocator final : public c10::Allocator {
  struct Totals {  // what the profiler is told alongside each change: bytes in use, and in use or cached
    size_t allocated = 0, reserved = 0;
  };

 public:
  // Requests below kMinCachedBytes, and all while inactive, get the replaced allocator's block and deleter; a
  // raw free of such a block arrives at release(), which passes it on.
  c10::DataPtr allocate(size_t n) override {
    if (n < kMinCachedBytes || !active()) return fallback_.load()->allocate(n);
    const size_t size = size_class(n);
    Totals totals;
    void* ptr = take(size, totals);
    if (ptr == nullptr) {
      ptr = c10::alloc_cpu(size);  // throws c10::Error when out of memory
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.misses;
      totals = note_live(ptr, size);
    }
    report(ptr, static_cast<int64_t>(size), totals);
    return {ptr, ptr, &release, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &release; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  void enable(size_t max_cached_bytes) {
    std::vector<void*> dropped;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!installed_) install();
      stats_.max_cached_bytes = max_cached_bytes;
      trim_to(max_cached_bytes, dropped);
      enabled_.store(true, std::memory_order_release);
    }
    free_blocks(dropped);
  }

  void disable(bool keep_cached) {
    enabled_.store(false, std::memory_order_release);
    if (!keep_cached) empty();
  }

  void enter_scope(size_t max_cached_bytes) {
    if (!installed_.load(std::memory_order_acquire)) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!installed_) install();
    }
    scope_bound_.store(max_cached_bytes, std::memory_order_relaxed);
    ++scope_depth_;
  }

  int suspend_scopes() {
    const int open = scope_depth_;
    scope_depth_ = 0;
    return open;
  }

  void resume_scopes(int open) { scope_depth_ = open; }

  // A thread's outermost scope closing ends an epoch. While not enabled, a block cached in one epoch and not
  // handed out again while kStaleEpochs more epochs end (a size the forwards no longer ask for: another
  // network, another batch size) is freed then, so a process that runs many networks does not keep each one's
  // activations up to the bound. Enabled, the program asked for the cache and its bound (a training loop,
  // whose steps may be many epochs apart when it evaluates in between): nothing ages.
  void exit_scope() {
    TORCH_CHECK(scope_depth_ > 0, "pycnn: cpu cache scope closed more often than opened on this thread");
    if (--scope_depth_ > 0) return;
    std::vector<void*> dropped;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++epoch_;
      if (!enabled_.load()) {
        auto stale = [&](const Cached& c) { return epoch_ - c.epoch > kStaleEpochs; };
        for (auto it = free_.begin(); it != free_.end();) {
          for (const Cached& c : it->second) {
            if (stale(c)) {
              dropped.push_back(c.ptr);
              stats_.cached_bytes -= it->first;
            }
          }
          it->second.erase(std::remove_if(it->second.begin(), it->second.end(), stale), it->second.end());
          it = it->second.empty() ? free_.erase(it) : std::next(it);
        }
      }
    }
    free_blocks(dropped);
  }

  void empty() {
    std::vector<void*> dropped;
    {
      std::lock_guard<std::mutex> lock(mu_);
      trim_to(0, dropped);
    }
    free_blocks(dropped);
  }

  Stats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    Stats s = stats_;
    s.enabled = enabled_.load();
    s.scopes = scope_depth_;
    return s;
  }

  // fork() while another thread holds the lock would leave the child's copy locked for good
  void lock_for_fork() { mu_.lock(); }
  void unlock_after_fork() { mu_.unlock(); }

 private:
  static void release(void* ptr);

  // Whether this thread's requests and frees go through the cache: enabled, or inside a scope of this thread.
  bool active() const { return enabled_.load(std::memory_order_acquire) || scope_depth_ > 0; }

  // The bound in force: enable()'s while enabled, else the scopes'.
  size_t bound() const {  // mu_ held
    return enabled_.load() ? stats_.max_cached_bytes : scope_bound_.load(std::memory_order_relaxed);
  }

  void install() {  // mu_ held
    c10::Allocator* current = c10::GetCPUAllocator();
    // frees of what it serves arrive through this allocator's raw deleter (give_back)
    TORCH_CHECK(current->raw_deleter() != nullptr, "pycnn: the installed CPU allocator has no raw deleter; the "
                "caching allocator cannot be put in front of it");
    // stored before this allocator can be reached, and kept: a thread that got it can always pass requests on
    fallback_.store(current);
    c10::SetCPUAllocator(this, kPriority);
    TORCH_CHECK(c10::GetCPUAllocator() == this, "pycnn: another CPU allocator is installed with a higher priority; "
                "the caching allocator was not installed");
    installed_.store(true, std::memory_order_release);
  }

  void give_back(void* ptr) {
    c10::DeleterFnPtr not_ours = nullptr;
    size_t size = 0;
    Totals totals;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = live_.find(ptr);
      if (it == live_.end()) {
        not_ours = fallback_.load()->raw_deleter();  // not null: install() checks
      } else {
        size = it->second;
        live_.erase(it);
        stats_.live_bytes -= size;
        totals = this->totals();
      }
    }
    if (not_ours != nullptr) {
      not_ours(ptr);
      return;
    }
    report(ptr, -static_cast<int64_t>(size), totals);  // before another thread can take the block again
    bool keep;
    {
      std::lock_guard<std::mutex> lock(mu_);
      keep = active() && stats_.cached_bytes + size <= bound();
      if (keep) {
        PYCNN_POISON(ptr, size);
        free_[size].push_back({ptr, epoch_});
        stats_.cached_bytes += size;
      }
    }
    if (!keep) c10::free_cpu(ptr);
  }

  // A cached block of this class (and the totals after handing it out), or nullptr. (Freeing other classes'
  // blocks on a miss, to cap what is held at what was ever in use at once, was tried: a training step then missed
  // on about half its requests every step, each miss evicting blocks the step needed later.)
  void* take(size_t size, Totals& totals) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.find(size);
    if (it == free_.end() || it->second.empty()) return nullptr;
    void* ptr = it->second.back().ptr;
    it->second.pop_back();
    stats_.cached_bytes -= size;
    ++stats_.hits;
    PYCNN_UNPOISON(ptr, size);
    totals = note_live(ptr, size);
    return ptr;
  }

  Totals totals() const { return {stats_.live_bytes, stats_.live_bytes + stats_.cached_bytes}; }  // mu_ held

  Totals note_live(void* ptr, size_t size) {  // mu_ held
    auto [it, inserted] = live_.emplace(ptr, size);
    if (!inserted) {  // malloc handed out this address, so whatever freed it last did not say so: drop that record
      stats_.live_bytes -= it->second;
      it->second = size;
    }
    stats_.live_bytes += size;
    return totals();
  }

  void trim_to(size_t bound, std::vector<void*>& dropped) {  // mu_ held; the caller frees `dropped` unlocked
    for (auto it = free_.begin(); it != free_.end() && stats_.cached_bytes > bound; ++it) {
      while (!it->second.empty() && stats_.cached_bytes > bound) {
        dropped.push_back(it->second.back().ptr);
        it->second.pop_back();
        stats_.cached_bytes -= it->first;
      }
    }
  }

  static void free_blocks(const std::vector<void*>& blocks) {
    for (void* p : blocks) c10::free_cpu(p);  // free_cpu: ASan's free accepts a poisoned block
  }

  // Unlocked (the profiler's own code runs here), with the totals taken right after the change.
  static void report(void* ptr, int64_t delta, Totals totals) {
    if (c10::memoryProfilingEnabled()) {  // the default CPU allocator reports to the profiler; so does this one
      c10::reportMemoryUsageToProfiler(ptr, delta, totals.allocated, totals.reserved,
                                       c10::Device(c10::DeviceType::CPU));
    }
  }

  std::mutex mu_;
  std::atomic<bool> enabled_{false};
  std::atomic<size_t> scope_bound_{0};  // what scopes may cache while not enabled (enter_scope's argument)
  static thread_local int scope_depth_;  // this thread's open scopes
  std::atomic<c10::Allocator*> fallback_{nullptr};  // the allocator it replaced (set before installing)
  std::atomic<bool> installed_{false};                // set under mu_; read without it by enter_scope
  struct Cached {
    void* ptr;
    uint64_t epoch;  // when it was freed (epoch_ then)
  };
  static constexpr uint64_t kStaleEpochs = 3;
  uint64_t epoch_ = 0;  // mu_: outermost scopes closed so far, on any thread
  std::unordered_map<size_t, std::vector<Cached>> free_;
  std::unordered_map<void*, size_t> live_;
  Stats stats_;
};

thread_local int CachingAllocator::scope_depth_ = 0;

CachingAllocator& instance() {
  static CachingAllocator* allocator = [] {  // leaked on purpose: frees may come during interpreter shutdown
    auto* a = new CachingAllocator();
    pthread_atfork([] { instance().lock_for_fork(); }, [] { instance().unlock_after_fork(); },
                   [] { instance().unlock_after_fork(); });
    return a;
  }();
  return *allocator;
}

void CachingAllocator::release(void* ptr) { instance().give_back(ptr); }

}  // namespace

void enable(size_t max_cached_bytes) { instance().enable(max_cached_bytes); }
void disable(bool keep_cached) { instance().disable(keep_cached); }
void empty() { instance().empty(); }
Stats stats() { return instance().stats(); }
void enter_scope(size_t max_cached_bytes) { instance().enter_scope(max_cached_bytes); }
void exit_scope() { instance().exit_scope(); }
int suspend_scopes() { return instance().suspend_scopes(); }
void resume_scopes(int open) { instance().resume_scopes(open); }

}  // namespace pycnn::cpu_cache

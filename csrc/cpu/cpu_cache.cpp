// The caching CPU allocator (cpu_cache.h). One process-wide instance, never destroyed: tensors it handed out
// may be freed at any time, on any thread, also after it was disabled.
#include "cpu_cache.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/Exception.h>
#include <pthread.h>

#include <mutex>
#include <unordered_map>
#include <vector>

namespace pycnn::cpu_cache {

size_t size_class(size_t n) {
  if (n < kMinCachedBytes) return n;
  size_t top = size_t{1} << (63 - __builtin_clzll(static_cast<unsigned long long>(n)));
  size_t step = top / 8;
  return (n + step - 1) / step * step;
}

namespace {

// Above the default CPU allocator's priority (0), so that c10 accepts it; checked after installing, so a
// library that installed its own allocator with a higher priority gets a clear error instead of no effect.
constexpr uint8_t kPriority = 16;

class CachingAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    c10::Allocator* fallback;
    bool enabled;
    {
      std::lock_guard<std::mutex> lock(mu_);
      fallback = fallback_;
      enabled = enabled_;
    }
    // disabled: only code that kept this allocator's pointer calls it then
    if (n < kMinCachedBytes || !enabled) return fallback->allocate(n);
    const size_t size = size_class(n);
    void* ptr = take(size);
    if (ptr == nullptr) {
      try {
        ptr = c10::alloc_cpu(size);
      } catch (const c10::Error&) {  // out of memory: what the cache holds may be enough
        empty();
        ptr = c10::alloc_cpu(size);
      }
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.misses;
      note_live(ptr, size);
    }
    report(ptr, static_cast<int64_t>(size));
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
      if (!enabled_) {
        c10::Allocator* current = c10::GetCPUAllocator();
        // frees of what it served arrive through this allocator's raw deleter (give_back)
        TORCH_CHECK(current->raw_deleter() != nullptr, "pycnn: the installed CPU allocator has no raw deleter; "
                    "the caching allocator cannot be put in front of it");
        TORCH_CHECK(fallback_ == nullptr || fallback_ == current,
                    "pycnn: the CPU allocator changed since the caching allocator was last installed");
        fallback_ = current;
        enabled_ = true;
      }
      stats_.max_cached_bytes = max_cached_bytes;
      trim_to(max_cached_bytes, dropped);
    }
    free_all(dropped);
    c10::SetCPUAllocator(this, kPriority);
    if (c10::GetCPUAllocator() != this) {
      disable(false);
      TORCH_CHECK(false, "pycnn: another CPU allocator is installed with a higher priority; the caching "
                         "allocator was not installed");
    }
  }

  void disable(bool keep_cached) {
    c10::Allocator* previous;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!enabled_) return;
      previous = fallback_;
      enabled_ = false;
    }
    if (c10::GetCPUAllocator() == this) c10::SetCPUAllocator(previous, kPriority);
    if (!keep_cached) empty();
  }

  void empty() {
    std::vector<void*> dropped;
    {
      std::lock_guard<std::mutex> lock(mu_);
      trim_to(0, dropped);
    }
    free_all(dropped);
  }

  Stats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    Stats s = stats_;
    s.enabled = enabled_;
    return s;
  }

  // fork() while another thread holds the lock would leave the child's copy locked for good
  void lock_for_fork() { mu_.lock(); }
  void unlock_after_fork() { mu_.unlock(); }

 private:
  static void release(void* ptr);

  void give_back(void* ptr) {
    bool keep;
    size_t size;
    c10::DeleterFnPtr not_ours = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = live_.find(ptr);
      if (it == live_.end()) {
        // The raw interface (raw_allocate / raw_deallocate, oneDNN's scratch memory) frees through this
        // allocator's raw_deleter what its fallback served, and code that looks the allocator up again at free
        // time frees what the previous one handed out before the cache was installed: the fallback's.
        not_ours = fallback_->raw_deleter();  // not null: enable() checks
      } else {
        size = it->second;
        live_.erase(it);
        stats_.live_bytes -= size;
        keep = enabled_ && stats_.cached_bytes + size <= stats_.max_cached_bytes;
        if (keep) {
          free_[size].push_back(ptr);
          stats_.cached_bytes += size;
        }
      }
    }
    if (not_ours != nullptr) {
      not_ours(ptr);
      return;
    }
    report(ptr, -static_cast<int64_t>(size));
    if (!keep) c10::free_cpu(ptr);
  }

  void* take(size_t size) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.find(size);
    if (it == free_.end() || it->second.empty()) return nullptr;
    void* ptr = it->second.back();
    it->second.pop_back();
    stats_.cached_bytes -= size;
    ++stats_.hits;
    note_live(ptr, size);
    return ptr;
  }

  void note_live(void* ptr, size_t size) {  // mu_ held
    live_.emplace(ptr, size);
    stats_.live_bytes += size;
  }

  void trim_to(size_t bound, std::vector<void*>& dropped) {  // mu_ held; the caller frees `dropped` unlocked
    for (auto it = free_.begin(); it != free_.end() && stats_.cached_bytes > bound; ++it) {
      while (!it->second.empty() && stats_.cached_bytes > bound) {
        dropped.push_back(it->second.back());
        it->second.pop_back();
        stats_.cached_bytes -= it->first;
      }
    }
  }

  static void free_all(const std::vector<void*>& blocks) {
    for (void* p : blocks) c10::free_cpu(p);
  }

  static void report(void* ptr, int64_t delta) {
    if (c10::memoryProfilingEnabled()) {  // the default CPU allocator reports to the profiler; so does this one
      c10::reportMemoryUsageToProfiler(ptr, delta, 0, 0, c10::Device(c10::DeviceType::CPU));
    }
  }

  std::mutex mu_;
  bool enabled_ = false;
  c10::Allocator* fallback_ = nullptr;
  std::unordered_map<size_t, std::vector<void*>> free_;
  std::unordered_map<void*, size_t> live_;
  Stats stats_;
};

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

}  // namespace pycnn::cpu_cache

// pycnn CUDA emulation: the launch executor.
//
// A launch runs its blocks one after another. The threads of a block are fibers (own stacks) of the calling OS
// thread; a fiber runs until it reaches a barrier (__syncthreads*, a warp collective) or returns, then the
// scheduler runs the next one. Between barriers the fibers run one at a time, in the order selected by
// set_schedule(): forward (thread 0 first), reverse, or a seeded shuffle that is redrawn for every pass.
// A missing barrier therefore shows up as a wrong result under at least one order.
//
// Errors (divergent or mismatched barriers, deadlocked warp collectives, invalid launch configurations,
// C++ exceptions thrown by a kernel) never hang or abort: the launch stops, cudaGetLastError() returns an
// error code, and pycnn_emu::last_error_message() tells which kernel, block, thread and source line.
#pragma once

#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace pycnn_emu {

// ---- settings ---------------------------------------------------------------------------------------------
enum class Order : int { Forward = 0, Reverse = 1, Shuffle = 2 };

inline const char* order_name(Order o) {
  switch (o) {
    case Order::Forward: return "forward";
    case Order::Reverse: return "reverse";
    case Order::Shuffle: return "shuffle";
  }
  return "?";
}

struct Settings {
  Order order = Order::Forward;
  uint64_t seed = 0;
  size_t stack_bytes = 256 * 1024;  // per fiber (per emulated thread)
  int sm_count = 4;                 // what cudaDeviceGetAttribute(MultiProcessorCount) reports
  int cc_major = 8, cc_minor = 0;   // the emulated device's compute capability
  bool poison_smem = true;          // fill dynamic shared memory with 0xff bytes (NaN / -1) per block
  Settings() {
    if (const char* e = std::getenv("PYCNN_EMU_ORDER")) {  // forward | reverse | shuffle[:seed]
      std::string s(e);
      if (s.rfind("reverse", 0) == 0) order = Order::Reverse;
      if (s.rfind("shuffle", 0) == 0) {
        order = Order::Shuffle;
        auto c = s.find(':');
        if (c != std::string::npos) seed = std::strtoull(s.c_str() + c + 1, nullptr, 10);
      }
    }
    if (const char* e = std::getenv("PYCNN_EMU_STACK_KB")) stack_bytes = size_t(std::atoi(e)) * 1024;
    if (const char* e = std::getenv("PYCNN_EMU_TRACE")) trace_events = std::atoi(e) > 0 ? std::atoi(e) : 0;
  }
  int trace_events = 0;  // PYCNN_EMU_TRACE=N: the first N launch steps go to stderr (see trace())
};
inline Settings& settings() {
  static Settings s;
  return s;
}
// A crash that even the crash reporter cannot report (no handler output at all) is located by the last step
// printed: each write goes straight to fd 2, so nothing is lost in a buffer when the process dies.
inline void trace(const char* fmt, ...) {
  int& left = settings().trace_events;
  if (left <= 0) return;
  --left;
  char buf[256];
  va_list ap;
  va_start(ap, fmt);
  int n = std::vsnprintf(buf, sizeof buf - 1, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  n = n < int(sizeof buf) - 2 ? n : int(sizeof buf) - 2;
  buf[n++] = '\n';
  (void)!write(2, "pycnn_emu trace: ", 17);
  (void)!write(2, buf, size_t(n));
}
inline void set_schedule(Order order, uint64_t seed = 0) {
  settings().order = order;
  settings().seed = seed;
}

// ---- errors and the launch record ---------------------------------------------------------------------------
struct ErrorState {
  cudaError_t last = cudaSuccess;  // returned and reset by cudaGetLastError()
  std::string message;             // detail of the most recent error; kept until the next error or clear
};
inline ErrorState& error_state() {
  static ErrorState s;
  return s;
}
inline void record_error(cudaError_t code, const std::string& msg) {
  error_state().last = code;
  error_state().message = msg;
}
inline const std::string& last_error_message() { return error_state().message; }
inline void clear_error() { error_state() = ErrorState{}; }

// "pycnn::cuda::bn_act_kernel<T, Act::ReLU>" -> "bn_act_kernel"
inline std::string strip_kernel_name(const char* expr) {
  std::string s, out;
  int depth = 0;
  for (const char* p = expr; *p; ++p) {
    if (*p == '<') depth++;
    else if (*p == '>') depth--;
    else if (depth == 0 && *p != ' ' && *p != '(' && *p != ')' && *p != '&' && *p != '*') s += *p;
  }
  auto c = s.rfind("::");
  return c == std::string::npos ? s : s.substr(c + 2);
}

inline std::map<std::string, long>& launch_counts() {
  static std::map<std::string, long> m;
  return m;
}

inline std::map<const void*, int>& max_dynamic_smem_attr() {
  static std::map<const void*, int> m;
  return m;
}

// ---- fibers ---------------------------------------------------------------------------------------------------
enum class TState : uint8_t { Runnable, AtBarrier, AtWarp, Done };

struct WarpCall;
using WarpResolve = void (*)(WarpCall* const* calls, unsigned present);

// One lane's part in a warp collective. `payload` lives on the lane's fiber stack, which stays valid while
// the lane waits; resolve() computes every participating lane's result at once when the last one arrives.
struct WarpCall {
  const char* op;  // "__shfl_sync", ...; lanes of one collective must agree on op and mask
  unsigned mask;
  const char* file;
  int line;
  void* payload;
  WarpResolve resolve;
};

// ---- context switching: a small assembly switch on x86-64 (no signal-mask syscalls), ucontext elsewhere ------
#if defined(__x86_64__) && !defined(PYCNN_EMU_UCONTEXT)
#define PYCNN_EMU_FAST_SWITCH 1
extern "C" void pycnn_emu_switch_x86_64(void** save_sp, void* load_sp);
// Saves the callee-saved registers, MXCSR and the x87 control word on the current stack, stores the stack
// pointer in *save_sp, and resumes the context whose stack pointer is load_sp. Weak: every translation unit
// that includes this header carries a copy and the linker keeps one.
asm(R"(
  .pushsection .text
  .weak pycnn_emu_switch_x86_64
  .type pycnn_emu_switch_x86_64,@function
pycnn_emu_switch_x86_64:
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
  .size pycnn_emu_switch_x86_64, .-pycnn_emu_switch_x86_64
  .popsection
)");
struct Context {
  void* sp = nullptr;
};
// A fresh context that starts executing entry() (which must never return) on the given stack.
inline void make_context(Context& c, char* stack, size_t size, void (*entry)()) {
  uintptr_t top = (reinterpret_cast<uintptr_t>(stack) + size) & ~uintptr_t(15);
  void** a = reinterpret_cast<void**>(top - 16);  // return-address slot, 16-byte aligned
  a[1] = nullptr;
  a[0] = reinterpret_cast<void*>(entry);
  void** sp = a - 7;  // rbp rbx r12 r13 r14 r15 (zeros), then MXCSR + x87 control word
  for (int i = 1; i <= 6; ++i) sp[i] = nullptr;
  const uint32_t csr[2] = {0x1f80u, 0x037fu};
  std::memcpy(sp, csr, 8);
  c.sp = sp;
}
inline void switch_context(Context& from, Context& to) { pycnn_emu_switch_x86_64(&from.sp, to.sp); }
#else
struct Context {
  ucontext_t uc;
};
inline void make_context(Context& c, char* stack, size_t size, void (*entry)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = size;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
}
inline void switch_context(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
#endif

struct Fiber {
  Context ctx;
  TState state;
  uint3 tid;
  const char* bar_file;
  int bar_line;
  int bar_kind;  // 0 __syncthreads, 1 _count, 2 _and, 3 _or
  int bar_pred;
  WarpCall* wcall;
};

struct BlockRun {
  std::string kernel;  // stripped name
  const char* expr;    // the launch expression
  Fiber* fibers;
  int nthreads;
  Context sched;
  int cur;
  bool abort;
  uint3 block_idx;
  void (*body)(void*);
  void* body_arg;
  int bar_result;
  unsigned char* dsmem;
};

namespace detail {
inline uint3 g_thread_idx{0, 0, 0};
inline uint3 g_block_idx{0, 0, 0};
inline dim3 g_block_dim{1, 1, 1};
inline dim3 g_grid_dim{1, 1, 1};
inline BlockRun* g_run = nullptr;
// watchdog state (see start_watchdog)
inline std::atomic<uint64_t> g_progress{0};
inline std::atomic<bool> g_launch_active{false};
inline std::atomic<int> g_watch_thread{0};
inline std::atomic<uint64_t> g_watch_block{0};
inline char g_watch_kernel[256];

inline std::recursive_mutex& launch_mutex() {
  static std::recursive_mutex m;
  return m;
}

struct StackPool {
  char* base = nullptr;
  size_t per = 0, page = 0, total = 0;
  int count = 0;
  // Each stack has a PROT_NONE guard page below it: an overflow faults instead of corrupting a neighbour.
  void ensure(int n, size_t bytes) {
    if (!page) page = size_t(sysconf(_SC_PAGESIZE));
    bytes = (bytes + page - 1) / page * page;
    if (n <= count && bytes == per) return;
    if (base) munmap(base, total);
    per = bytes;
    count = n;
    total = size_t(n) * (per + page);
    void* p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      base = nullptr;
      count = 0;
      return;
    }
    base = static_cast<char*>(p);
    for (int i = 0; i < n; ++i) mprotect(base + size_t(i) * (per + page), page, PROT_NONE);
  }
  char* stack(int i) const { return base + size_t(i) * (per + page) + page; }
};
inline StackPool& stacks() {
  static StackPool p;
  return p;
}
inline std::vector<Fiber>& fiber_vec() {
  static std::vector<Fiber> v;
  return v;
}

inline std::string fmt3(uint3 v) {
  std::ostringstream o;
  o << "(" << v.x << "," << v.y << "," << v.z << ")";
  return o.str();
}

inline std::string where(const BlockRun& r, int t) {
  std::ostringstream o;
  o << "kernel '" << r.kernel << "' block " << fmt3(r.block_idx) << " thread " << fmt3(r.fibers[t].tid)
    << " [linear " << t << ", warp " << t / 32 << ", lane " << t % 32 << "]";
  return o.str();
}

inline std::string site(const char* file, int line) {
  std::ostringstream o;
  const char* base = std::strrchr(file, '/');
  o << (base ? base + 1 : file) << ":" << line;
  return o.str();
}

inline void switch_to_scheduler() {
  BlockRun* r = g_run;
  switch_context(r->fibers[r->cur].ctx, r->sched);
}

// Called from inside a fiber: stop the launch. The fiber is abandoned (never resumed).
[[noreturn]] inline void fail_in_fiber(cudaError_t code, const std::string& msg) {
  BlockRun* r = g_run;
  record_error(code, "pycnn_emu: " + msg);
  r->abort = true;
  switch_to_scheduler();
  std::abort();  // unreachable: aborted fibers are never resumed
}

inline void fiber_entry() {
  BlockRun* r = g_run;
  trace("fiber %d entered", r->cur);
  std::string what;  // leave the handler before switching: the C++ runtime's caught-exception stack is per OS thread
  bool threw = false;
  try {
    r->body(r->body_arg);
  } catch (const std::exception& e) {
    threw = true;
    what = e.what();
  } catch (...) {
    threw = true;
    what = "unknown exception";
  }
  r = g_run;
  trace("fiber %d body returned%s", r->cur, threw ? " (threw)" : "");
  if (threw) fail_in_fiber(cudaErrorLaunchFailure, where(*r, r->cur) + ": exception: " + what);
  r->fibers[r->cur].state = TState::Done;
  switch_context(r->fibers[r->cur].ctx, r->sched);
  std::abort();  // unreachable: finished fibers are never resumed
}

inline const char* state_name(const Fiber& f) {
  switch (f.state) {
    case TState::Runnable: return "running";
    case TState::AtBarrier: return "waiting at __syncthreads";
    case TState::AtWarp: return "waiting at a warp collective";
    case TState::Done: return "exited";
  }
  return "?";
}

inline std::string describe_wait(const Fiber& f) {
  std::string s = state_name(f);
  if (f.state == TState::AtBarrier) s += " (" + site(f.bar_file, f.bar_line) + ")";
  if (f.state == TState::AtWarp) s += std::string(" ") + f.wcall->op + " (" + site(f.wcall->file, f.wcall->line) + ")";
  return s;
}

// Try to complete the warp collective that lane `lane0` of warp `w` waits at. Returns true when released.
// Lanes of the mask that exited (or do not exist in a partial warp) count as arrived but not participating;
// a shuffle reading such a lane gets a poison value (all bits set). A lane of the mask waiting at a
// different collective is an error.
inline bool try_release_warp(BlockRun& r, int w, int lane0, std::string* err) {
  const WarpCall& c = *r.fibers[w * 32 + lane0].wcall;
  WarpCall* calls[32] = {};
  unsigned present = 0;
  for (int l = 0; l < 32; ++l) {
    if (!((c.mask >> l) & 1u)) continue;
    const int t = w * 32 + l;
    if (t >= r.nthreads) continue;
    const Fiber& f = r.fibers[t];
    if (f.state == TState::Done) continue;
    if (f.state != TState::AtWarp) return false;  // not arrived yet (or at __syncthreads: found later)
    const WarpCall& o = *f.wcall;
    if (std::strcmp(o.op, c.op) != 0 || o.mask != c.mask) {
      std::ostringstream m;
      m << where(r, w * 32 + lane0) << ": " << c.op << "(mask 0x" << std::hex << c.mask << std::dec << ") at "
        << site(c.file, c.line) << " does not match lane " << l << ", which waits at " << o.op << "(mask 0x"
        << std::hex << o.mask << std::dec << ") at " << site(o.file, o.line)
        << " (divergent warp collective)";
      *err = m.str();
      return false;
    }
    calls[l] = f.wcall;
    present |= 1u << l;
  }
  c.resolve(calls, present);
  for (int l = 0; l < 32; ++l)
    if ((present >> l) & 1u) {
      Fiber& f = r.fibers[w * 32 + l];
      f.state = TState::Runnable;
      f.wcall = nullptr;
    }
  return true;
}

// Called by a lane arriving at a warp collective; returns after the collective completed.
inline void warp_collective(WarpCall& c) {
  BlockRun* r = g_run;
  const int me = r->cur;
  const int lane = me % 32, w = me / 32;
  if (!((c.mask >> lane) & 1u)) {
    std::ostringstream m;
    m << where(*r, me) << ": " << c.op << " at " << site(c.file, c.line) << " with mask 0x" << std::hex << c.mask
      << " that does not include the calling lane";
    fail_in_fiber(cudaErrorLaunchFailure, m.str());
  }
  Fiber& f = r->fibers[me];
  f.wcall = &c;
  f.state = TState::AtWarp;
  std::string err;
  try_release_warp(*r, w, lane, &err);
  if (!err.empty()) fail_in_fiber(cudaErrorLaunchFailure, err);
  switch_to_scheduler();
}

inline int block_barrier(int kind, int pred, const char* file, int line) {
  BlockRun* r = g_run;
  if (!r) return pred;  // called outside a launch (host code): nothing to wait for
  Fiber& f = r->fibers[r->cur];
  f.state = TState::AtBarrier;
  f.bar_file = file;
  f.bar_line = line;
  f.bar_kind = kind;
  f.bar_pred = pred;
  switch_to_scheduler();
  return g_run->bar_result;
}

inline void make_order(std::vector<int>& order, int n, Order o, std::mt19937_64& rng) {
  order.resize(n);
  for (int i = 0; i < n; ++i) order[i] = (o == Order::Reverse) ? n - 1 - i : i;
  if (o == Order::Shuffle) std::shuffle(order.begin(), order.end(), rng);
}

// Runs one block to completion; false (error recorded) on failure.
inline bool run_block(BlockRun& r, const dim3& bd, std::vector<int>& order, uint64_t block_linear) {
  const int n = r.nthreads;
  StackPool& sp = stacks();
  for (int i = 0; i < n; ++i) {
    Fiber& f = r.fibers[i];
    make_context(f.ctx, sp.stack(i), sp.per, fiber_entry);
    f.state = TState::Runnable;
    f.tid = uint3{unsigned(i) % bd.x, (unsigned(i) / bd.x) % bd.y, unsigned(i) / (bd.x * bd.y)};
    f.wcall = nullptr;
  }
  trace("block %llu: %d fiber contexts made", static_cast<unsigned long long>(block_linear), n);
  const Order ord = settings().order;
  std::mt19937_64 rng(settings().seed * 0x9E3779B97F4A7C15ull + block_linear + 1);
  for (;;) {
    bool ran = false;
    make_order(order, n, ord, rng);
    for (int idx : order) {
      Fiber& f = r.fibers[idx];
      if (f.state != TState::Runnable) continue;
      ran = true;
      r.cur = idx;
      g_thread_idx = f.tid;
      g_progress.fetch_add(1, std::memory_order_relaxed);
      g_watch_thread.store(idx, std::memory_order_relaxed);
      trace("switch to fiber %d (stack %p)", idx, static_cast<void*>(stacks().stack(idx)));
      switch_context(r.sched, f.ctx);
      trace("back from fiber %d", idx);
      if (r.abort) return false;
    }
    if (ran) continue;
    // Nobody can run: finished, a barrier to release, or an error.
    int done = 0, at_bar = 0, at_warp = 0, first_bar = -1, first_done = -1;
    for (int i = 0; i < n; ++i) {
      switch (r.fibers[i].state) {
        case TState::Done: done++; if (first_done < 0) first_done = i; break;
        case TState::AtBarrier: at_bar++; if (first_bar < 0) first_bar = i; break;
        case TState::AtWarp: at_warp++; break;
        default: break;
      }
    }
    if (done == n) return true;
    if (at_warp) {
      // A collective may have become complete because a lane of its mask exited.
      bool released = false;
      for (int i = 0; i < n && !released; ++i) {
        if (r.fibers[i].state != TState::AtWarp) continue;
        std::string err;
        released = try_release_warp(r, i / 32, i % 32, &err);
        if (!err.empty()) {
          record_error(cudaErrorLaunchFailure, "pycnn_emu: " + err);
          return false;
        }
      }
      if (released) continue;
      for (int i = 0; i < n; ++i) {
        const Fiber& f = r.fibers[i];
        if (f.state != TState::AtWarp) continue;
        const WarpCall& c = *f.wcall;
        std::ostringstream m;
        m << "pycnn_emu: " << where(r, i) << ": " << c.op << "(mask 0x" << std::hex << c.mask << std::dec
          << ") at " << site(c.file, c.line) << " never completes (deadlock):";
        for (int l = 0; l < 32; ++l) {
          const int t = (i / 32) * 32 + l;
          if (!((c.mask >> l) & 1u) || t >= n) continue;
          if (r.fibers[t].state != TState::AtWarp) m << " lane " << l << " is " << describe_wait(r.fibers[t]) << ";";
        }
        record_error(cudaErrorLaunchFailure, m.str());
        return false;
      }
    }
    if (done) {
      std::ostringstream m;
      m << "pycnn_emu: " << where(r, first_done) << " exited while " << at_bar
        << " thread(s) of its block wait at __syncthreads (" << site(r.fibers[first_bar].bar_file, r.fibers[first_bar].bar_line)
        << ", first waiter thread " << fmt3(r.fibers[first_bar].tid)
        << "): divergent barrier (a barrier one thread never reaches hangs or corrupts on the GPU)";
      record_error(cudaErrorLaunchFailure, m.str());
      return false;
    }
    // Everybody waits at a block barrier: they must all wait at the same one.
    const Fiber& f0 = r.fibers[first_bar];
    for (int i = 0; i < n; ++i) {
      const Fiber& f = r.fibers[i];
      if (f.bar_line != f0.bar_line || f.bar_kind != f0.bar_kind || std::strcmp(f.bar_file, f0.bar_file) != 0) {
        std::ostringstream m;
        m << "pycnn_emu: kernel '" << r.kernel << "' block " << fmt3(r.block_idx) << ": threads wait at different "
          << "barriers: thread " << fmt3(f0.tid) << " at " << site(f0.bar_file, f0.bar_line) << ", thread "
          << fmt3(f.tid) << " at " << site(f.bar_file, f.bar_line) << " (divergent __syncthreads)";
        record_error(cudaErrorLaunchFailure, m.str());
        return false;
      }
    }
    int res = f0.bar_kind == 2 ? 1 : 0;
    for (int i = 0; i < n; ++i) {
      Fiber& f = r.fibers[i];
      const int p = f.bar_pred != 0;
      if (f0.bar_kind == 1) res += p;
      else if (f0.bar_kind == 2) res &= p;
      else if (f0.bar_kind == 3) res |= p;
      f.state = TState::Runnable;
    }
    r.bar_result = res;
  }
}

// ---- watchdog -------------------------------------------------------------------------------------------------
// A thread that loops forever without reaching a barrier (a spin-wait on another thread or block) cannot be
// preempted. A background OS thread notices when a launch makes no scheduling progress for
// PYCNN_EMU_WATCHDOG_S seconds (default 120, 0 disables), names the kernel and thread, and aborts the process
// (pytest's faulthandler then prints the Python stack) instead of letting CI hang.

inline void start_watchdog() {
  static std::once_flag once;
  std::call_once(once, [] {
    double limit = 120;
    if (const char* e = std::getenv("PYCNN_EMU_WATCHDOG_S")) limit = std::atof(e);
    if (limit <= 0) return;
    std::thread([limit] {
      uint64_t last = ~uint64_t(0);
      double stalled = 0;
      for (;;) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        const uint64_t p = g_progress.load(std::memory_order_relaxed);
        if (!g_launch_active.load() || p != last) {
          last = p;
          stalled = 0;
          continue;
        }
        stalled += 0.1;
        if (stalled >= limit) {
          const uint64_t b = g_watch_block.load();
          std::fprintf(stderr,
                       "\npycnn_emu: watchdog: kernel '%s' made no progress for %.0f s: block (%u,%u,%u) thread "
                       "[linear %d] never reaches a barrier or its end (an infinite loop, or a spin-wait on another "
                       "thread without __nanosleep or on another block, which never runs concurrently)\n",
                       g_watch_kernel, limit, unsigned(b & 0xffffffu), unsigned((b >> 24) & 0xffffu),
                       unsigned(b >> 40), g_watch_thread.load());
          std::fflush(stderr);
          std::abort();
        }
      }
    }).detach();
  });
}

// ---- crash reports ---------------------------------------------------------------------------------------------
// A kernel that faults (out-of-bounds pointer, stack overflow into a fiber's guard page) cannot be recovered;
// while a launch runs, SIGSEGV/SIGBUS first print which kernel, block and thread faulted, then the previous
// handler (Python's faulthandler under pytest, or the default action) takes over.
inline struct sigaction g_old_segv, g_old_bus;

inline void crash_handler(int sig, siginfo_t* info, void*) {
  sigaction(SIGSEGV, &g_old_segv, nullptr);
  sigaction(SIGBUS, &g_old_bus, nullptr);
  BlockRun* r = g_run;
  if (!r) return;  // re-executes the faulting instruction under the previous handler
  const StackPool& sp = stacks();
  const uintptr_t a = reinterpret_cast<uintptr_t>(info->si_addr), base = reinterpret_cast<uintptr_t>(sp.base);
  const char* what = sig == SIGBUS ? "bus error" : "segmentation fault";
  if (sp.base && a >= base && a < base + sp.total && (a - base) % (sp.per + sp.page) < sp.page)
    what = "stack overflow (raise PYCNN_EMU_STACK_KB)";
  const Fiber& f = r->fibers[r->cur];
  char buf[640];
  const int n = std::snprintf(buf, sizeof buf,
                              "\npycnn_emu: %s at address %p in kernel '%s' (%s), block (%u,%u,%u), thread (%u,%u,%u)"
                              " [linear %d]\n",
                              what, info->si_addr, r->kernel.c_str(), r->expr, r->block_idx.x, r->block_idx.y,
                              r->block_idx.z, f.tid.x, f.tid.y, f.tid.z, r->cur);
  if (n > 0) (void)!write(2, buf, size_t(n) < sizeof buf ? size_t(n) : sizeof buf - 1);
}

struct CrashReporter {
  CrashReporter() {
    stack_t cur;
    if (sigaltstack(nullptr, &cur) == 0 && (cur.ss_flags & SS_DISABLE)) {  // a handler needs a stack of its own
      static char alt[64 * 1024];
      stack_t ss{};
      ss.ss_sp = alt;
      ss.ss_size = sizeof alt;
      sigaltstack(&ss, nullptr);
    }
    struct sigaction sa {};
    sa.sa_sigaction = crash_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_old_segv);
    sigaction(SIGBUS, &sa, &g_old_bus);
  }
  ~CrashReporter() {
    sigaction(SIGSEGV, &g_old_segv, nullptr);
    sigaction(SIGBUS, &g_old_bus, nullptr);
  }
};

inline void run_launch(const char* expr, dim3 grid, dim3 block, size_t smem, const void* fn, void (*body)(void*),
                       void* arg) {
  std::lock_guard<std::recursive_mutex> lock(launch_mutex());
  const std::string name = strip_kernel_name(expr);
  launch_counts()[name]++;
  auto bad = [&](cudaError_t code, const std::string& why) {
    record_error(code, "pycnn_emu: launch of kernel '" + name + "' (" + expr + "): " + why);
  };
  if (g_run) return bad(cudaErrorLaunchFailure, "launched from inside a kernel (dynamic parallelism is not emulated)");
  const uint64_t nthreads = uint64_t(block.x) * block.y * block.z;
  std::ostringstream cfg;
  cfg << "grid (" << grid.x << "," << grid.y << "," << grid.z << ") block (" << block.x << "," << block.y << ","
      << block.z << ") dynamic smem " << smem;
  if (!grid.x || !grid.y || !grid.z || !nthreads)
    return bad(cudaErrorInvalidConfiguration, "empty grid or block: " + cfg.str());
  if (block.x > 1024 || block.y > 1024 || block.z > 64 || nthreads > 1024)
    return bad(cudaErrorInvalidConfiguration, "block too large (max 1024 threads, z <= 64): " + cfg.str());
  if (grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535)
    return bad(cudaErrorInvalidConfiguration, "grid too large (y, z <= 65535): " + cfg.str());
  size_t smem_limit = 48 * 1024;
  auto it = max_dynamic_smem_attr().find(fn);
  if (it != max_dynamic_smem_attr().end()) smem_limit = size_t(it->second);
  if (smem > smem_limit)
    return bad(cudaErrorInvalidValue, "dynamic shared memory " + std::to_string(smem) + " bytes exceeds " +
                                          std::to_string(smem_limit) +
                                          " (raise it with cudaFuncSetAttribute(MaxDynamicSharedMemorySize))");

  trace("launch '%s': %s", name.c_str(), cfg.str().c_str());
  StackPool& sp = stacks();
  sp.ensure(std::max<int>(int(nthreads), sp.count), settings().stack_bytes);
  trace("stacks: base %p, %d of %zu bytes", static_cast<void*>(sp.base), sp.count, sp.per);
  if (!sp.base) return bad(cudaErrorMemoryAllocation, "cannot allocate fiber stacks");
  std::vector<Fiber>& fv = fiber_vec();
  if (fv.size() < nthreads) fv.resize(nthreads);
  std::vector<unsigned char> dsmem_store(smem + 16);
  unsigned char* dsmem = dsmem_store.data();
  dsmem += (16 - reinterpret_cast<uintptr_t>(dsmem) % 16) % 16;

  BlockRun r;
  r.kernel = name;
  r.expr = expr;
  r.fibers = fv.data();
  r.nthreads = int(nthreads);
  r.abort = false;
  r.body = body;
  r.body_arg = arg;
  r.bar_result = 0;
  r.dsmem = dsmem;
  g_block_dim = block;
  g_grid_dim = grid;
  CrashReporter crash_reporter;
  trace("crash reporter installed");
  start_watchdog();
  trace("watchdog started");
  std::snprintf(g_watch_kernel, sizeof g_watch_kernel, "%s", name.c_str());
  g_launch_active = true;
  g_run = &r;
  std::vector<int> order;
  uint64_t linear = 0;
  bool ok = true;
  for (unsigned z = 0; z < grid.z && ok; ++z)
    for (unsigned y = 0; y < grid.y && ok; ++y)
      for (unsigned x = 0; x < grid.x && ok; ++x, ++linear) {
        r.block_idx = uint3{x, y, z};
        g_block_idx = r.block_idx;
        g_watch_block.store(uint64_t(x & 0xffffffu) | (uint64_t(y) << 24) | (uint64_t(z) << 40));
        if (settings().poison_smem && smem) std::memset(dsmem, 0xff, smem);
        ok = run_block(r, block, order, linear);
      }
  g_run = nullptr;
  g_launch_active = false;
  trace("launch '%s' done", name.c_str());
}

template <typename... P>
struct Launcher {
  const char* expr;
  void (*fn)(P...);
  dim3 grid, block;
  size_t smem;

  template <typename... A>
  void operator()(A&&... args) const {
    static_assert(sizeof...(A) == sizeof...(P), "pycnn_emu: wrong number of kernel arguments");
    // Kernel parameters are copied at launch, converted to the parameter types as CUDA does.
    using Params = std::tuple<std::decay_t<P>...>;
    struct Closure {
      void (*fn)(P...);
      Params params;
      static void call(void* self) {
        Closure* c = static_cast<Closure*>(self);
        std::apply(c->fn, c->params);  // each thread gets its own by-value copies
      }
    };
    Closure c{fn, Params(static_cast<std::decay_t<P>>(std::forward<A>(args))...)};
    run_launch(expr, grid, block, smem, reinterpret_cast<const void*>(fn), &Closure::call, &c);
  }
};

template <typename... P>
Launcher<P...> launcher(const char* expr, void (*fn)(P...), dim3 grid, dim3 block, size_t smem) {
  return Launcher<P...>{expr, fn, grid, block, smem};
}

inline void* dynamic_smem() { return g_run ? g_run->dsmem : nullptr; }

}  // namespace detail

using detail::dynamic_smem;
using detail::launcher;

// Sets the launch-config helper state used by tests.
inline void set_sm_count(int n) { settings().sm_count = n; }

// Throws std::runtime_error with the detailed message when `err` is not cudaSuccess (for test bindings).
inline void check(cudaError_t err, const char* what = "launch") {
  if (err != cudaSuccess) {
    std::string msg = std::string(what) + " failed: error " + std::to_string(int(err));
    if (!error_state().message.empty()) msg += ": " + error_state().message;
    error_state().message.clear();
    throw std::runtime_error(msg);
  }
}

}  // namespace pycnn_emu

// ---- built-in variables ------------------------------------------------------------------------------------
inline const uint3& threadIdx = pycnn_emu::detail::g_thread_idx;
inline const uint3& blockIdx = pycnn_emu::detail::g_block_idx;
inline const dim3& blockDim = pycnn_emu::detail::g_block_dim;
inline const dim3& gridDim = pycnn_emu::detail::g_grid_dim;

// ---- block barriers ----------------------------------------------------------------------------------------
inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  pycnn_emu::detail::block_barrier(0, 0, file, line);
}
inline int __syncthreads_count(int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return pycnn_emu::detail::block_barrier(1, pred, file, line);
}
inline int __syncthreads_and(int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return pycnn_emu::detail::block_barrier(2, pred, file, line);
}
inline int __syncthreads_or(int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return pycnn_emu::detail::block_barrier(3, pred, file, line);
}

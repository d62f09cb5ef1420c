// Diagnostic for a native crash that only happens on another machine: on SIGSEGV/SIGBUS, print the faulting
// address, the registers, the shared object + offset of every frame (resolve them there with
// `addr2line -Cf -e SO OFFSET`) and the memory regions holding the instruction and stack pointers, then hand
// the signal to the handler installed before (Python's faulthandler, which prints the Python stack).
// Load it after faulthandler is enabled, so that it runs first:
//   cc -O1 -shared -fPIC -o /tmp/segv_report.so tools/segv_report.c
//   python -X faulthandler -c "import ctypes; ctypes.CDLL('/tmp/segv_report.so'); import pytest; pytest.main([...])"
// Not async-signal-safe (dladdr, stdio): it runs once, in a process that is about to die.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <execinfo.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>

static struct sigaction old_segv, old_bus;

static void print_frame(const char* label, void* addr) {
  Dl_info d;
  memset(&d, 0, sizeof d);
  if (dladdr(addr, &d) && d.dli_fname)
    fprintf(stderr, "segv_report: %s %p %s +%#lx (%s)\n", label, addr, d.dli_fname,
            (unsigned long)((uintptr_t)addr - (uintptr_t)d.dli_fbase), d.dli_sname ? d.dli_sname : "?");
  else
    fprintf(stderr, "segv_report: %s %p (no object)\n", label, addr);
}

static void print_region(const char* label, uintptr_t a) {
  FILE* f = fopen("/proc/self/maps", "r");
  char line[512];
  while (f && fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && a >= lo && a < hi) fprintf(stderr, "segv_report: %s in %s", label, line);
  }
  if (f) fclose(f);
}

static void report(int sig, siginfo_t* info, void* ctx) {
  sigaction(SIGSEGV, &old_segv, NULL);
  sigaction(SIGBUS, &old_bus, NULL);
  const greg_t* g = ((ucontext_t*)ctx)->uc_mcontext.gregs;
  fprintf(stderr, "\nsegv_report: signal %d code %d address %p\n", sig, info->si_code, info->si_addr);
  fprintf(stderr, "segv_report: rip %llx rsp %llx rbp %llx rax %llx rbx %llx rcx %llx rdx %llx rsi %llx rdi %llx\n",
          (unsigned long long)g[REG_RIP], (unsigned long long)g[REG_RSP], (unsigned long long)g[REG_RBP],
          (unsigned long long)g[REG_RAX], (unsigned long long)g[REG_RBX], (unsigned long long)g[REG_RCX],
          (unsigned long long)g[REG_RDX], (unsigned long long)g[REG_RSI], (unsigned long long)g[REG_RDI]);
  fprintf(stderr, "segv_report: r8 %llx r9 %llx r10 %llx r11 %llx r12 %llx r13 %llx r14 %llx r15 %llx\n",
          (unsigned long long)g[REG_R8], (unsigned long long)g[REG_R9], (unsigned long long)g[REG_R10],
          (unsigned long long)g[REG_R11], (unsigned long long)g[REG_R12], (unsigned long long)g[REG_R13],
          (unsigned long long)g[REG_R14], (unsigned long long)g[REG_R15]);
  print_frame("ip", (void*)g[REG_RIP]);
  print_region("ip", (uintptr_t)g[REG_RIP]);
  print_region("sp", (uintptr_t)g[REG_RSP]);
  print_region("address", (uintptr_t)info->si_addr);
  void* frames[64];
  const int n = backtrace(frames, 64);  // unwinds through the signal frame into the faulting code
  for (int i = 0; i < n; ++i) print_frame("frame", frames[i]);
  fflush(stderr);
}

__attribute__((constructor)) static void install(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = report;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  void* warm[1];
  backtrace(warm, 1);  // loads libgcc_s now, not inside the handler
  sigaction(SIGSEGV, &sa, &old_segv);
  sigaction(SIGBUS, &sa, &old_bus);
}

// Which processor a thread runs on, and keeping a thread off one (glibc's GNU extensions, which the
// Glibc Swift module does not export). The training loop keeps its side thread off the processor the
// main thread is on, so the two run side by side rather than taking turns (Docs/Performance.md).
#ifndef QSHAPE_THREADS_H
#define QSHAPE_THREADS_H
#if defined(__linux__)
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <sched.h>
#include <unistd.h>
#include <sys/syscall.h>

/// The calling thread's kernel id.
static inline int qs_thread_id(void) { return (int)syscall(SYS_gettid); }

/// The processor the calling thread is on now (-1 when unknown).
static inline int qs_current_processor(void) { return sched_getcpu(); }

/// Lets thread `tid` run on every processor this process may use except `cpu`; where that
/// leaves none, on all of them. Returns 0 on success.
static inline int qs_keep_off_processor(int tid, int cpu) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return -1;
    if (cpu >= 0 && cpu < CPU_SETSIZE && CPU_ISSET(cpu, &set) && CPU_COUNT(&set) > 1) CPU_CLR(cpu, &set);
    return sched_setaffinity(tid, sizeof set, &set);
}
#else
static inline int qs_thread_id(void) { return 0; }
static inline int qs_current_processor(void) { return -1; }
static inline int qs_keep_off_processor(int tid, int cpu) { (void)tid; (void)cpu; return -1; }
#endif
#endif

/* ThreadSanitizer support for the uninstrumented Debian libraries (librdkafka, Paho). Compiled
 * into every executable that links converge::broker, in ThreadSanitizer builds only
 * (CONVERGE_SANITIZE=thread; see broker-adapters/CMakeLists.txt).
 *
 * 1. librdkafka starts, joins and detaches its threads with C11 thrd_create/thrd_join/
 *    thrd_detach. glibc implements those by calling its internal pthread functions directly,
 *    past TSan's interceptors, so TSan never sets such a thread up and crashes in its first
 *    malloc. Defining the three functions in the executable interposes librdkafka's calls and
 *    routes them through the intercepted pthread functions.
 * 2. Debian's librdkafka is not built with TSan, so TSan sees only the memory operations it
 *    intercepts inside it (malloc, memcpy, ...) and not its atomics, and reports races inside
 *    librdkafka that are not real. Those reports are suppressed; races in Converge's own code
 *    are still reported. (TSan reads __tsan_default_suppressions before TSAN_OPTIONS; only one
 *    definition may exist per executable.)
 * 3. The same holds for Debian's Paho C++ (and C): a token's completion callback signals its
 *    condition variable on Paho's thread, and the waiter may then drop the last reference and
 *    destroy it; the ordering between the two comes from the reference count's atomic decrement
 *    inside libpaho-mqttpp3 (shared_ptr, in Paho's uninstrumented code), which TSan cannot see,
 *    so it reports the destroy as racing with the signal. Those reports are suppressed too. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <threads.h>

struct converge_thrd_start {
  thrd_start_t func;
  void* arg;
};

static void* converge_thrd_trampoline(void* p) {
  struct converge_thrd_start start = *(struct converge_thrd_start*)p;
  free(p);
  return (void*)(intptr_t)start.func(start.arg);
}

static int converge_thrd_error(int err) {
  if (err == 0) return thrd_success;
  return err == ENOMEM || err == EAGAIN ? thrd_nomem : thrd_error;
}

int thrd_create(thrd_t* thr, thrd_start_t func, void* arg) {
  struct converge_thrd_start* start = malloc(sizeof(*start));
  if (start == NULL) return thrd_nomem;
  start->func = func;
  start->arg = arg;
  int err = pthread_create((pthread_t*)thr, NULL, converge_thrd_trampoline, start);
  if (err != 0) free(start);
  return converge_thrd_error(err);
}

int thrd_join(thrd_t thr, int* res) {
  void* ret = NULL;
  int err = pthread_join((pthread_t)thr, &ret);
  if (err == 0 && res != NULL) *res = (int)(intptr_t)ret;
  return converge_thrd_error(err);
}

int thrd_detach(thrd_t thr) { return converge_thrd_error(pthread_detach((pthread_t)thr)); }

const char* __tsan_default_suppressions(void) {
  return "called_from_lib:librdkafka.so.1\n"
         "race:librdkafka.so.1\n"
         "race:libpaho-mqttpp3.so.1\n"
         "race:libpaho-mqtt3as.so.1\n";
}

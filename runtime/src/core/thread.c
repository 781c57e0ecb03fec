/*
 * core/thread.c — starting a set of named threads (core/thread_internal.h).
 *
 * Room: runtime/src/core. Calls pthreads only.
 */
#include "core/thread_internal.h"

#include <stdio.h>

unsigned perfc__threads_start(const perfc__thread_spec *spec, unsigned n) {
  unsigned i;
  for (i = 0; i < n; i++) {
    pthread_t *t = NULL;
    void *arg = spec->setup(spec->user_data, i, &t);
    if (arg == NULL || t == NULL)
      break;
    if (perfc__thread_create(t, spec->main, arg) != 0) {
      if (spec->undo != NULL)
        spec->undo(spec->user_data, i);
      break;
    }
    /* Names help `top -H` and gdb; a failure to set one changes nothing. */
    char name[16];
    snprintf(name, sizeof name, "%s%u", spec->name, i);
    pthread_setname_np(*t, name);
  }
  return i;
}

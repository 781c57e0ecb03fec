/* test_transport.h — which server transport a test's servers use.
 *
 * Every server a server-side suite starts goes through test_server_new()
 * (or test_transport_apply() on its options), so CTest runs the suite once
 * per transport: the plain registration on the library's default (h2),
 * the `.core` copy with PERFC_TEST_TRANSPORT=core (tests/CMakeLists.txt,
 * perfc_add_server_test). Header-only, so suites that do not link the
 * integration tests' service library use it too. */
#ifndef PERFC_TEST_TRANSPORT_H
#define PERFC_TEST_TRANSPORT_H

#include "perfc/server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* PERFC_TEST_TRANSPORT ("h2" or "core"; unset or empty: the default) into
 * `o`. Exits the test process on any other value: a misspelt variable
 * must not silently test the default twice. */
static inline void test_transport_apply(perfc_server_opts *o) {
  const char *t = getenv("PERFC_TEST_TRANSPORT");
  if (t == NULL || t[0] == '\0')
    return;
  if (strcmp(t, "h2") == 0) {
    o->transport = PERFC_TRANSPORT_H2;
  } else if (strcmp(t, "core") == 0) {
    o->transport = PERFC_TRANSPORT_CORE;
  } else {
    fprintf(stderr, "PERFC_TEST_TRANSPORT=%s: expected h2 or core\n", t);
    exit(2);
  }
}

/* Whether servers made through here run on h2 (the library's default).
 * For the few tests of a C-core-only mechanism, which skip on h2 saying
 * why (cr_skip_test), never silently. */
static inline int test_transport_is_h2(void) {
  perfc_server_opts o;
  perfc_server_opts_init(&o);
  test_transport_apply(&o);
  return o.transport == PERFC_TRANSPORT_H2;
}

/* perfc_server_new() with test_transport_apply() (`opts` NULL: defaults). */
static inline int test_server_new(perfc_server **out,
                                  const perfc_server_opts *opts) {
  perfc_server_opts o;
  if (opts != NULL)
    o = *opts;
  else
    perfc_server_opts_init(&o);
  test_transport_apply(&o);
  return perfc_server_new(out, &o);
}

#endif

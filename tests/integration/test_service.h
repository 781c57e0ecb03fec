/* test_service.h — the TestService implementation shared by the in-process
 * tests and perfc-test-server. */
#ifndef PERFC_TEST_SERVICE_H
#define PERFC_TEST_SERVICE_H
#include "perfc/test/v1/test.perfc.h"
#include "../unit/test_transport.h" /* test_server_new, PERFC_TEST_TRANSPORT */

#include <stdatomic.h>

/* Starts a server on 127.0.0.1:0 with TestService; returns it and its port.
 * `opts` may be NULL. */
perfc_server *test_server_start(const perfc_server_opts *opts, int *port);

/* Frees the server and the channel its Relay method uses. */
void test_server_stop(perfc_server *srv);

extern const Perfc__Test__V1__TestService_Handlers test_service_handlers;

/* Slow handler runs so far: a test waits for its call to be running on the
 * server instead of guessing a delay (a sanitizer build can take longer
 * than any fixed guess to connect). */
extern atomic_int test_slow_started;

/* The most Slow handlers that ran at the same time since the last reset
 * (store 0): lets a test assert on overlap instead of on elapsed time. */
extern atomic_int test_slow_running_max;

/* Replies of the last Chat or Expand stream that the server held back to
 * write with later ones (perfc__stream_replies_held), stored when its
 * handler ends. */
extern atomic_ulong test_stream_held;

/* Strings and RawStrings handler runs. */
extern atomic_int test_strings_calls;

/* Slow handler runs that ended early because their call was cancelled or
 * its deadline passed. */
extern atomic_int test_slow_cancelled;

/* Collect, Expand, Chat and Quit as loop callbacks with the same answers
 * (perfc_server_set_stream_callbacks; sleeps and lingers not honoured),
 * on a server made but not started. Returns 0 or its error (PERFC_ESTATE
 * on the C core transport). test_server_start() does it when
 * test_loop_streams is set. */
int test_service_loop_streams(perfc_server *srv);
extern int test_loop_streams;
/* Loop streams cancelled before they finished (their on_cancel ran), and
 * sends that answered PERFC_EFULL (flow control reached the handler). */
extern atomic_int test_loop_cancels;
extern atomic_int test_loop_efull;
#endif

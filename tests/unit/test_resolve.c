/* test_resolve.c — host names resolved off the loops (data/resolve.c).
 *
 * Checked: literals and socket directories pass through untouched;
 * "localhost" resolves through the system, IPv4 first; a lookup that
 * takes a second never blocks a peek (it answers "not yet" at once) while
 * a waiter gets the address when it comes; a failed lookup is asked again
 * no more than once a second, and a later success is served; the last
 * reference forgets every answer. The lookup is the test's own
 * (perfc__resolve_set_lookup) except in the "localhost" test. */
#include "data/resolve_internal.h"
#include "perfc/common.h"

#include <criterion/criterion.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int64_t ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static atomic_int slow_calls, flaky_calls;

/* slow*.test: 10.0.0.7 after a second. flaky.test: fails once, then
 * 10.0.0.8. Anything else does not resolve. */
static int fake_lookup(const char *name, char addr[PERFC__RESOLVE_ADDR_LEN]) {
  if (strncmp(name, "slow", 4) == 0) {
    atomic_fetch_add(&slow_calls, 1);
    usleep(1000 * 1000);
    strcpy(addr, "10.0.0.7");
    return 0;
  }
  if (strcmp(name, "flaky.test") == 0) {
    if (atomic_fetch_add(&flaky_calls, 1) == 0)
      return -1;
    strcpy(addr, "10.0.0.8");
    return 0;
  }
  return -1;
}

static void fini(void) {
  perfc__resolve_set_lookup(NULL);
}

TestSuite(resolve, .fini = fini, .timeout = 30);

Test(resolve, literals_pass_through) {
  cr_assert_eq(perfc__resolve_is_name("127.0.0.1"), 0);
  cr_assert_eq(perfc__resolve_is_name("::1"), 0);
  cr_assert_eq(perfc__resolve_is_name("/var/run/postgresql"), 0);
  cr_assert_eq(perfc__resolve_is_name(""), 0);
  cr_assert_eq(perfc__resolve_is_name("redis"), 1);
  cr_assert_eq(perfc__resolve_is_name("pg-0.pg.svc"), 1);
  char addr[PERFC__RESOLVE_ADDR_LEN];
  cr_assert_eq(perfc__resolve_ref(), 0);
  cr_assert_eq(perfc__resolve_peek("10.1.2.3", addr), 0);
  cr_assert_str_eq(addr, "10.1.2.3");
  cr_assert_eq(perfc__resolve_peek("fe80::1", addr), 0);
  cr_assert_str_eq(addr, "fe80::1");
  perfc__resolve_unref();
}

Test(resolve, localhost_through_the_system_ipv4_first) {
  char addr[PERFC__RESOLVE_ADDR_LEN];
  cr_assert_eq(perfc__resolve_ref(), 0);
  cr_assert_eq(perfc__resolve_wait("localhost", addr, 5000), 0);
  cr_assert_str_eq(addr, "127.0.0.1");
  perfc__resolve_unref();
}

Test(resolve, a_slow_lookup_never_blocks_a_peek) {
  perfc__resolve_set_lookup(fake_lookup);
  atomic_store(&slow_calls, 0);
  cr_assert_eq(perfc__resolve_ref(), 0);
  char addr[PERFC__RESOLVE_ADDR_LEN];
  int64_t t0 = ms();
  cr_assert_eq(perfc__resolve_peek("slow.test", addr), PERFC_EUNAVAILABLE);
  cr_assert_eq(perfc__resolve_peek("slow.test", addr), PERFC_EUNAVAILABLE);
  cr_assert_lt(ms() - t0, 100, "peek waited for the lookup");
  /* A waiter gets the answer when it comes: one lookup for both peeks. */
  cr_assert_eq(perfc__resolve_wait("slow.test", addr, 5000), 0);
  cr_assert_str_eq(addr, "10.0.0.7");
  cr_assert_geq(ms() - t0, 900);
  t0 = ms();
  cr_assert_eq(perfc__resolve_peek("slow.test", addr), 0);
  cr_assert_str_eq(addr, "10.0.0.7");
  cr_assert_lt(ms() - t0, 100);
  cr_assert_eq(atomic_load(&slow_calls), 1);
  /* A wait shorter than the lookup gives up on time. */
  t0 = ms();
  cr_assert_eq(perfc__resolve_wait("slow2.test", addr, 200),
               PERFC_EUNAVAILABLE);
  cr_assert_lt(ms() - t0, 800);
  cr_assert_geq(ms() - t0, 190);
  perfc__resolve_unref();
}

Test(resolve, a_failure_is_asked_again_once_a_second_then_served) {
  perfc__resolve_set_lookup(fake_lookup);
  atomic_store(&flaky_calls, 0);
  cr_assert_eq(perfc__resolve_ref(), 0);
  char addr[PERFC__RESOLVE_ADDR_LEN];
  cr_assert_eq(perfc__resolve_wait("flaky.test", addr, 5000), PERFC_ENOENT);
  cr_assert_eq(atomic_load(&flaky_calls), 1);
  /* Peeks within the second ask nothing. */
  for (int i = 0; i < 10; i++)
    cr_assert_eq(perfc__resolve_peek("flaky.test", addr), PERFC_ENOENT);
  usleep(200 * 1000);
  cr_assert_eq(atomic_load(&flaky_calls), 1);
  /* After it, a peek asks again; the answer is then served. */
  usleep(1000 * 1000);
  cr_assert_eq(perfc__resolve_peek("flaky.test", addr), PERFC_ENOENT);
  int64_t end = ms() + 5000;
  while (perfc__resolve_peek("flaky.test", addr) != 0 && ms() < end)
    usleep(1000);
  cr_assert_str_eq(addr, "10.0.0.8");
  cr_assert_eq(atomic_load(&flaky_calls), 2);
  /* The last reference forgets: the name is asked again. */
  perfc__resolve_unref();
  cr_assert_eq(perfc__resolve_ref(), 0);
  cr_assert_eq(perfc__resolve_wait("flaky.test", addr, 5000), 0);
  cr_assert_eq(atomic_load(&flaky_calls), 3);
  perfc__resolve_unref();
}

/* test_cancel_watch.c — the call layer's registry of client calls made
 * under a server call (server/call.c, perfc__ctx_watch): a cancel fires
 * each watch once, a removed or detached watch never fires, a parent
 * already cancelled refuses the registration, and the end of the shutdown
 * grace fires only the watches of calls on workers. Contexts here are
 * built by hand on a server that never starts, with a transport whose
 * finish does nothing, so each path is checked without a network. */
#include "server/call_internal.h"
#include "server/server_internal.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

static int finished;
static void fake_finish(perfc_ctx *ctx) {
  (void)ctx;
  finished++;
}
static const perfc__transport_ops fake_ops = {.name = "fake",
                                              .finish = fake_finish,
                                              .refuse = fake_finish};

static perfc_server *srv;

static void setup(void) {
  cr_assert_eq(perfc_server_new(&srv, NULL), 0);
  finished = 0;
}
static void teardown(void) { perfc_server_free(srv); }

TestSuite(cancel_watch, .init = setup, .fini = teardown, .timeout = 30);

static void ctx_init(perfc_ctx *ctx) {
  memset(ctx, 0, sizeof *ctx);
  ctx->ops = &fake_ops;
  ctx->srv = srv;
  ctx->deadline_ns = INT64_MAX;
  ctx->code = PERFC_STATUS_OK;
}

static void count(void *arg) { atomic_fetch_add((atomic_int *)arg, 1); }

Test(cancel_watch, cancel_fires_every_watch_of_its_call_once) {
  perfc_ctx a, b;
  ctx_init(&a);
  ctx_init(&b);
  atomic_int na = 0, nb = 0;
  perfc__cancel_watch w1, w2, w3;
  cr_assert_eq(perfc__ctx_watch(&a, &w1, count, &na), 0);
  cr_assert_eq(perfc__ctx_watch(&a, &w2, count, &na), 0);
  cr_assert_eq(perfc__ctx_watch(&b, &w3, count, &nb), 0);
  cr_assert_eq(atomic_load(&a.watched), 2);
  perfc__call_cancel(&a);
  cr_assert_eq(atomic_load(&na), 2);
  cr_assert_eq(atomic_load(&nb), 0, "another call's watch fired");
  cr_assert_eq(atomic_load(&a.watched), 0);
  cr_assert(perfc__call_cancel_seen(&a));
  perfc__call_cancel(&a); /* a second cancel finds nothing to fire */
  cr_assert_eq(atomic_load(&na), 2);
  perfc__ctx_unwatch(&w1); /* after the fire: a no-op */
  perfc__ctx_unwatch(&w2);
  perfc__ctx_unwatch(&w3);
  perfc__call_cancel(&b);
  cr_assert_eq(atomic_load(&nb), 0, "an unwatched watch fired");
  cr_assert_null(srv->watches);
}

Test(cancel_watch, a_parent_already_cancelled_refuses_the_watch) {
  perfc_ctx a;
  ctx_init(&a);
  atomic_int n = 0;
  perfc__cancel_watch w;
  perfc__call_cancel(&a);
  cr_assert_eq(perfc__ctx_watch(&a, &w, count, &n), 1);
  cr_assert_eq(atomic_load(&n), 0, "the caller cancels, not the registry");
  cr_assert_null(srv->watches);
  cr_assert_eq(atomic_load(&a.watched), 0);
  perfc__ctx_unwatch(&w);
  /* A deadline that passed counts as a cancel too. */
  perfc_ctx d;
  ctx_init(&d);
  d.deadline_ns = 1;
  cr_assert_eq(perfc__ctx_watch(&d, &w, count, &n), 1);
}

Test(cancel_watch, finish_detaches_so_a_later_cancel_leaves_the_child_alone) {
  perfc_ctx a;
  ctx_init(&a);
  atomic_int n = 0;
  perfc__cancel_watch w; /* as an asynchronous call outliving its handler */
  cr_assert_eq(perfc__ctx_watch(&a, &w, count, &n), 0);
  perfc__call_finish(&a);
  cr_assert_eq(finished, 1);
  cr_assert_null(w.ctx, "still attached to a finished call");
  cr_assert_eq(atomic_load(&a.watched), 0);
  cr_assert_null(srv->watches);
  perfc__call_cancel(&a); /* the transport reports the close afterwards */
  cr_assert_eq(atomic_load(&n), 0);
  perfc__ctx_unwatch(&w); /* the child ends later: safe, a no-op */
}

Test(cancel_watch, grace_end_fires_only_calls_on_workers) {
  perfc_ctx inl, pooled;
  ctx_init(&inl);
  ctx_init(&pooled);
  pooled.run_listed = 1;
  atomic_int ni = 0, np = 0;
  perfc__cancel_watch wi, wp;
  cr_assert_eq(perfc__ctx_watch(&inl, &wi, count, &ni), 0);
  cr_assert_eq(perfc__ctx_watch(&pooled, &wp, count, &np), 0);
  perfc__cancel_running(srv);
  cr_assert_eq(atomic_load(&np), 1);
  cr_assert_eq(atomic_load(&ni), 0, "an inline call is not cut by the grace");
  /* A call on a worker registering after the grace ended is refused. */
  perfc__cancel_watch late;
  cr_assert_eq(perfc__ctx_watch(&pooled, &late, count, &np), 1);
  perfc__ctx_unwatch(&wi);
  perfc__ctx_unwatch(&wp);
  cr_assert_null(srv->watches);
}

/* Cancels racing registrations and removals from other threads: every
 * watch fires at most once, and one registered before the cancel and not
 * removed fires exactly once (the count and flag are ordered). */
typedef struct {
  perfc_ctx *ctx;
  atomic_int fired;
  int refused, kept; /* kept < 0: a watch fired twice */
} racer;

static void *race(void *p) {
  racer *r = p;
  perfc__cancel_watch w;
  for (int i = 0; i < 2000; i++) {
    int before = atomic_load(&r->fired);
    if (perfc__ctx_watch(r->ctx, &w, count, &r->fired) != 0) {
      r->refused++;
      break;
    }
    perfc__ctx_unwatch(&w);
    if (atomic_load(&r->fired) > before + 1)
      r->kept = -1; /* fired twice for one registration */
  }
  return NULL;
}

Test(cancel_watch, cancel_racing_registrations_fires_each_at_most_once) {
  for (int round = 0; round < 20; round++) {
    perfc_ctx a;
    ctx_init(&a);
    racer r[2] = {{.ctx = &a}, {.ctx = &a}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
      pthread_create(&t[i], NULL, race, &r[i]);
    perfc__call_cancel(&a);
    for (int i = 0; i < 2; i++)
      pthread_join(t[i], NULL);
    for (int i = 0; i < 2; i++) {
      cr_assert_leq(atomic_load(&r[i].fired), 1, "round %d", round);
      cr_assert_eq(r[i].kept, 0, "round %d: a watch fired twice", round);
    }
    cr_assert_eq(atomic_load(&a.watched), 0);
    cr_assert_null(srv->watches);
    perfc__cancel_watch w;
    atomic_int n = 0;
    cr_assert_eq(perfc__ctx_watch(&a, &w, count, &n), 1);
  }
}

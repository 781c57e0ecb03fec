/*
 * health.c — grpc.health.v1.Health over a table of per-service statuses.
 *
 * Room: runtime/src/observe. Serves the service protoc-gen-perfc generates from
 * proto/grpc/health/v1/health.proto (private to the runtime); depends on
 * the server only through its public API and a shutdown hook.
 *
 * Check is a lookup under a mutex and runs inline on the poller. Watch is a
 * server stream, so it runs on the worker pool and blocks: it waits on the
 * object's condition variable, woken by every change and by a periodic
 * timeout, the latter so that a watcher whose client went away notices it
 * (perfc_ctx_cancelled()) and gives its worker back even when no status
 * ever changes again.
 */
#include "perfc/health.h"
#include "core/error_internal.h"
#include "perfc/log.h"
#include "perfc/stream.h"

#include "grpc/health/v1/health.perfc.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct entry {
  char *name;
  perfc_health_status status;
} entry;

struct perfc_health {
  pthread_mutex_t mu;
  pthread_cond_t cv; /* on CLOCK_MONOTONIC; broadcast on every change */
  entry *items;      /* few services per server: a linear scan is enough */
  size_t n, cap;
  int shut_down;
  int64_t poll_ms;
};

/* The generated enum and ours carry the same numbers (the wire's); this
 * fails the build if either ever drifts. */
_Static_assert(
    (int)PERFC_HEALTH_SERVING ==
            GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING &&
        (int)PERFC_HEALTH_NOT_SERVING ==
            GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING &&
        (int)PERFC_HEALTH_SERVICE_UNKNOWN ==
            GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN,
    "perfc_health_status must match grpc.health.v1.ServingStatus");

void perfc_health_opts_init(perfc_health_opts *o) {
  memset(o, 0, sizeof *o);
  o->watch_poll_ms = PERFC_DEFAULT_HEALTH_WATCH_POLL_MS;
}

static entry *find_locked(perfc_health *h, const char *name) {
  for (size_t i = 0; i < h->n; i++)
    if (strcmp(h->items[i].name, name) == 0)
      return &h->items[i];
  return NULL;
}

/* Once shutting down, every name is NOT_SERVING, known or not: the whole
 * server is going away, which is true of anything a checker asks about. */
static perfc_health_status lookup_locked(perfc_health *h, const char *name) {
  if (h->shut_down)
    return PERFC_HEALTH_NOT_SERVING;
  entry *e = find_locked(h, name);
  return e != NULL ? e->status : PERFC_HEALTH_SERVICE_UNKNOWN;
}

int perfc_health_new(perfc_health **out, const perfc_health_opts *opts) {
  if (out == NULL || (opts != NULL && opts->watch_poll_ms < 0))
    return perfc__fail(PERFC_EINVAL, "health: %s",
                       out == NULL ? "NULL out" : "watch_poll_ms is negative");
  perfc_health *h = calloc(1, sizeof *h);
  if (h == NULL)
    return perfc__fail(PERFC_ENOMEM, "health: out of memory");
  h->poll_ms = opts != NULL && opts->watch_poll_ms > 0
                   ? opts->watch_poll_ms
                   : PERFC_DEFAULT_HEALTH_WATCH_POLL_MS;
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&h->cv, &ca);
  pthread_condattr_destroy(&ca);
  pthread_mutex_init(&h->mu, NULL);
  /* grpc's own health services start with the whole server SERVING. */
  int rc = perfc_health_set(h, "", PERFC_HEALTH_SERVING);
  if (rc != 0) {
    perfc_health_free(h);
    return rc;
  }
  *out = h;
  return 0;
}

void perfc_health_free(perfc_health *h) {
  if (h == NULL)
    return;
  for (size_t i = 0; i < h->n; i++)
    free(h->items[i].name);
  free(h->items);
  pthread_cond_destroy(&h->cv);
  pthread_mutex_destroy(&h->mu);
  free(h);
}

int perfc_health_set(perfc_health *h, const char *service,
                     perfc_health_status status) {
  if (h == NULL || service == NULL ||
      (status != PERFC_HEALTH_SERVING && status != PERFC_HEALTH_NOT_SERVING &&
       status != PERFC_HEALTH_UNKNOWN))
    return perfc__fail(PERFC_EINVAL, "health: set needs a health object, a "
                                     "service name and SERVING, NOT_SERVING "
                                     "or UNKNOWN");
  int rc = 0;
  pthread_mutex_lock(&h->mu);
  entry *e = find_locked(h, service);
  if (h->shut_down) {
    rc = PERFC_ESHUTDOWN;
  } else if (e != NULL) {
    e->status = status;
  } else {
    char *name = strdup(service);
    if (name != NULL && h->n == h->cap) {
      size_t cap = h->cap ? h->cap * 2 : 8;
      entry *items = realloc(h->items, cap * sizeof *items);
      if (items != NULL) {
        h->items = items;
        h->cap = cap;
      }
    }
    if (name == NULL || h->n == h->cap) {
      free(name);
      rc = PERFC_ENOMEM;
    } else {
      h->items[h->n++] = (entry){.name = name, .status = status};
    }
  }
  if (rc == 0)
    pthread_cond_broadcast(&h->cv);
  pthread_mutex_unlock(&h->mu);
  if (rc == PERFC_ESHUTDOWN)
    return perfc__fail(rc, "health: %s: the server is shutting down", service);
  if (rc != 0)
    return perfc__fail(rc, "health: out of memory");
  return 0;
}

int perfc_health_clear(perfc_health *h, const char *service) {
  if (h == NULL || service == NULL)
    return perfc__fail(PERFC_EINVAL, "health: clear needs a health object and "
                                     "a service name");
  pthread_mutex_lock(&h->mu);
  entry *e = find_locked(h, service);
  if (e != NULL) {
    free(e->name);
    *e = h->items[--h->n];
    pthread_cond_broadcast(&h->cv);
  }
  pthread_mutex_unlock(&h->mu);
  return e != NULL
             ? 0
             : perfc__fail(PERFC_ENOENT, "health: %s has no status", service);
}

perfc_health_status perfc_health_get(perfc_health *h, const char *service) {
  if (h == NULL)
    return PERFC_HEALTH_SERVICE_UNKNOWN;
  pthread_mutex_lock(&h->mu);
  perfc_health_status st = lookup_locked(h, service ? service : "");
  pthread_mutex_unlock(&h->mu);
  return st;
}

void perfc_health_shutdown(perfc_health *h) {
  if (h == NULL)
    return;
  pthread_mutex_lock(&h->mu);
  h->shut_down = 1;
  pthread_cond_broadcast(&h->cv);
  pthread_mutex_unlock(&h->mu);
}

const char *perfc_health_status_name(perfc_health_status status) {
  switch (status) {
  case PERFC_HEALTH_UNKNOWN:
    return "UNKNOWN";
  case PERFC_HEALTH_SERVING:
    return "SERVING";
  case PERFC_HEALTH_NOT_SERVING:
    return "NOT_SERVING";
  case PERFC_HEALTH_SERVICE_UNKNOWN:
    return "SERVICE_UNKNOWN";
  }
  return "INVALID";
}

/* ---- the service --------------------------------------------------------- */

static perfc_status_code check(perfc_ctx *ctx,
                               const Grpc__Health__V1__HealthCheckRequest *req,
                               Grpc__Health__V1__HealthCheckResponse *resp,
                               void *user_data) {
  perfc_health *h = user_data;
  const char *name = req->service ? req->service : "";
  perfc_health_status st = perfc_health_get(h, name);
  if (st == PERFC_HEALTH_SERVICE_UNKNOWN)
    return perfc_ctx_error(ctx, PERFC_STATUS_NOT_FOUND,
                           "unknown service \"%s\"", name);
  resp->status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)st;
  return PERFC_STATUS_OK;
}

static void wait_change(perfc_health *h) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  ts.tv_sec += h->poll_ms / 1000;
  ts.tv_nsec += (h->poll_ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  pthread_cond_timedwait(&h->cv, &h->mu, &ts);
}

static perfc_status_code watch(perfc_ctx *ctx,
                               const Grpc__Health__V1__HealthCheckRequest *req,
                               perfc_stream *writer, void *user_data) {
  perfc_health *h = user_data;
  const char *name = req->service ? req->service : "";
  int sent = -1; /* last status sent; none yet */
  pthread_mutex_lock(&h->mu);
  for (;;) {
    perfc_health_status st = lookup_locked(h, name);
    if ((int)st != sent) {
      /* Send without the lock: a slow client must not stall perfc_health_set
       * or other watchers. A change made meanwhile is caught by the next
       * lookup, so only intermediate states can be skipped, as in grpc's
       * own implementations. */
      pthread_mutex_unlock(&h->mu);
      Grpc__Health__V1__HealthCheckResponse m =
          GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
      m.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)st;
      if (grpc__health__v1__health__watch__send(writer, &m) != 0)
        return perfc_ctx_error(ctx, PERFC_STATUS_CANCELLED,
                               "watch of \"%s\": the client went away", name);
      sent = (int)st;
      pthread_mutex_lock(&h->mu);
      continue;
    }
    if (h->shut_down)
      break;
    if (perfc_ctx_cancelled(ctx)) {
      pthread_mutex_unlock(&h->mu);
      if (perfc_ctx_remaining_ms(ctx) == 0)
        return perfc_ctx_error(ctx, PERFC_STATUS_DEADLINE_EXCEEDED,
                               "watch of \"%s\": deadline reached", name);
      return perfc_ctx_error(ctx, PERFC_STATUS_CANCELLED,
                             "watch of \"%s\": cancelled", name);
    }
    wait_change(h);
  }
  pthread_mutex_unlock(&h->mu);
  /* NOT_SERVING went out above; ending the stream tells the watcher to look
   * elsewhere now instead of when the connection drops. */
  return perfc_ctx_error(ctx, PERFC_STATUS_UNAVAILABLE,
                         "server is shutting down");
}

static const Grpc__Health__V1__Health_Handlers health_handlers = {
    .check = check,
    .watch = watch,
};

static void on_server_shutdown(perfc_server *srv, void *user_data) {
  (void)srv;
  perfc_health_shutdown(user_data);
}

int perfc_health_register(perfc_health *h, perfc_server *srv) {
  if (h == NULL || srv == NULL)
    return perfc__fail(PERFC_EINVAL, "health: register needs a health object "
                                     "and a server");
  int rc = grpc__health__v1__health__perfc_register(srv, &health_handlers, h);
  if (rc == 0)
    rc = perfc_server_add_shutdown_hook(srv, on_server_shutdown, h, NULL);
  if (rc != 0)
    perfc_log(PERFC_LOG_ERROR, "health: cannot register: %s",
              perfc_strerror(rc));
  return rc;
}

/*
 * perfc/health.h — the standard gRPC health service, grpc.health.v1.Health
 * (Check and Watch), as Kubernetes' grpc probes, grpc_health_probe, load
 * balancers and client-side health checking expect it.
 *
 * The application owns a perfc_health and sets a status per service name;
 * "" stands for the whole server and starts SERVING. Check answers a known
 * name's status and NOT_FOUND for others. Watch sends the current status at
 * once (SERVICE_UNKNOWN for a name never set) and then every change, until
 * the client cancels. When the server's graceful shutdown begins, every
 * name reports NOT_SERVING, open Watch streams send it and end, and later
 * perfc_health_set() calls are ignored. See docs/observability.md.
 *
 * Room: runtime public headers. Every function is thread-safe.
 */
#ifndef PERFC_HEALTH_H
#define PERFC_HEALTH_H

#include "perfc/common.h"
#include "perfc/server.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct perfc_health perfc_health;

/** Serving status; the values are grpc.health.v1's ServingStatus numbers. */
typedef enum perfc_health_status {
  PERFC_HEALTH_UNKNOWN = 0,
  PERFC_HEALTH_SERVING = 1,
  PERFC_HEALTH_NOT_SERVING = 2,
  /** Watch only: the name has no status (yet). */
  PERFC_HEALTH_SERVICE_UNKNOWN = 3
} perfc_health_status;

/** How often a Watch waiting for a change wakes to notice a client that
 *  went away: a watcher holds a worker thread, and this bounds how long it
 *  keeps it after the client left. Changes are sent at once regardless. */
#define PERFC_DEFAULT_HEALTH_WATCH_POLL_MS 500

typedef struct perfc_health_opts {
  /** Wake-up period of a waiting Watch, ms; 0 = default. */
  int64_t watch_poll_ms;
} perfc_health_opts;

/** Fills `o` with the defaults above. */
PERFC_API void perfc_health_opts_init(perfc_health_opts *o);

/** Creates a health object in which "" (the whole server) is SERVING and
 *  nothing else is known. `opts` may be NULL. The caller frees it with
 *  perfc_health_free() after freeing every server it was registered on.
 *  Returns 0, PERFC_EINVAL or PERFC_ENOMEM. */
PERFC_API int perfc_health_new(perfc_health **out,
                               const perfc_health_opts *opts);

/** Frees. Every server it was registered on must be freed first. NULL is a
 *  no-op. */
PERFC_API void perfc_health_free(perfc_health *h);

/** Sets the status of `service` (a full service name such as
 *  "user.v1.UserService", or "" for the whole server); the name is copied.
 *  Watchers of that name are woken. `status` must be SERVING, NOT_SERVING
 *  or UNKNOWN. Ignored (returns PERFC_ESHUTDOWN) once a server it serves
 *  began shutting down. Returns 0, PERFC_EINVAL, PERFC_ENOMEM or
 *  PERFC_ESHUTDOWN. */
PERFC_API int perfc_health_set(perfc_health *h, const char *service,
                               perfc_health_status status);

/** Forgets `service`: Check answers NOT_FOUND for it and its watchers get
 *  SERVICE_UNKNOWN. Returns 0, PERFC_EINVAL or PERFC_ENOENT. */
PERFC_API int perfc_health_clear(perfc_health *h, const char *service);

/** The status of `service`, or PERFC_HEALTH_SERVICE_UNKNOWN when it has
 *  none. NULL `service` is "". */
PERFC_API perfc_health_status perfc_health_get(perfc_health *h,
                                               const char *service);

/** Reports NOT_SERVING for every name, ends every Watch, and ignores later
 *  perfc_health_set() calls; what a server's shutdown does through
 *  perfc_health_register()'s hook. Idempotent. */
PERFC_API void perfc_health_shutdown(perfc_health *h);

/** Serves `h` as grpc.health.v1.Health on `srv` and makes `srv`'s
 *  graceful shutdown call perfc_health_shutdown(h). `h` is borrowed and
 *  must outlive `srv`; one health object may serve several servers. Watch
 *  runs on the server's worker pool, one worker per open Watch. Before
 *  perfc_server_start() only. Returns 0 or what perfc_server_add_service()
 *  and perfc_server_add_shutdown_hook() return. */
PERFC_API int perfc_health_register(perfc_health *h, perfc_server *srv);

/** Canonical name of a status ("SERVING"); static, never NULL. */
PERFC_API const char *perfc_health_status_name(perfc_health_status status);

#ifdef __cplusplus
}
#endif
#endif /* PERFC_HEALTH_H */

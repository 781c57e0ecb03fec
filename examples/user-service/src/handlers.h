/*
 * handlers.h — user.v1.UserService's handlers and what they share.
 *
 * Room: examples/user-service.
 */
#ifndef USER_SERVICE_HANDLERS_H
#define USER_SERVICE_HANDLERS_H

#include "perfc/cache.h"
#include "perfc/pg.h"
#include "perfc/pg_async.h"
#include "user/v1/user.perfc.h"

/** What every handler reaches through its user_data; borrowed. */
typedef struct user_service {
  perfc_pg_pool *pg;
  /** The same database from the event loops (h2 transport): the reads
   *  that run there (user_service_async_handlers) query through it. NULL
   *  on the C core transport, which has no loops of perfc's. */
  perfc_pg_async *pga;
  /** The cache main.c also hands to the generated wiring (one cache for
   *  every RPC); NULL when `cache.enabled` is false. */
  perfc_cache *cache;
} user_service;

/** The handler table to register, with a user_service as user_data,
 *  through user__v1__user_service__perfc_register_cached(). */
extern const User__V1__UserService_Handlers user_service_handlers;

/** The reads that run on the h2 transport's event loops instead of the
 *  worker pool, with the same results: GetUser's load on a cache miss,
 *  ListUsers and BatchGetUsers. Registered with
 *  user__v1__user_service__perfc_register_cached_async() when `pga` is
 *  set; where a call arrives off a loop the handlers above serve it. */
extern const User__V1__UserService_AsyncHandlers user_service_async_handlers;

/** Serves SyncUsers with loop callbacks (perfc/stream.h) on `srv`: one
 *  cache lookup on the loop per id (perfc_cache_get_or_load_async(), the
 *  misses loaded through `svc->pga`), instead of a worker per stream.
 *  After the service's registration, before the start; only for the h2
 *  transport and a cache whose Redis has its client on the loops
 *  (svc->cache with cache.async_redis on). Returns
 *  perfc_server_set_stream_callbacks()'s result. */
int user_service_sync_users_on_loop(perfc_server *srv, user_service *svc);

/** Longest accepted name, in characters (UTF-8 code points). */
#define USER_NAME_MAX 100
/** Most ids one BatchGetUsers may ask for. */
#define USER_BATCH_MAX 1000
/** ListUsers page size when the request says 0 or less, and its ceiling. */
#define USER_PAGE_DEFAULT 50
#define USER_PAGE_MAX 1000

#endif

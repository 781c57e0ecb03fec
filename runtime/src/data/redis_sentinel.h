/*
 * data/redis_sentinel.h — finding and following the Redis master through
 * Redis Sentinel, for the synchronous pool and its subscriber (redis.c)
 * and the asynchronous client on the loops (redis_async.c).
 *
 * Room: runtime/src/data private header (data layer, Redis). Not
 * installed. Design and failure table: docs/data-layer.md, "Redis
 * Sentinel".
 *
 * One object per (master name, sentinel list) in the process, shared by
 * reference count: a pool, its cache's subscriber and its async client
 * built from the same options share one resolver and one watcher thread.
 * The watcher stays SUBSCRIBEd to `+switch-master` on every sentinel and
 * resolves again on a switch (trying the announced address first),
 * on a connection failure a user reports (perfc__redis_sentinel_suspect)
 * and after each (re)subscription. Resolving asks the sentinels in turn
 * `SENTINEL get-master-addr-by-name` and confirms the answer with `ROLE`
 * on the named node. When the confirmed address changes, the epoch
 * advances, every socket registered under an older epoch is shut down (so
 * commands in flight there fail at once), and the listeners are told.
 */
#ifndef PERFC_REDIS_SENTINEL_H
#define PERFC_REDIS_SENTINEL_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

#include "perfc/redis.h"

typedef struct perfc__redis_sentinel perfc__redis_sentinel;

/* Checks the sentinel fields of `o` (n_sentinels > 0 needs a master_name
 * and HOST:PORT entries; a master_name needs sentinels; a
 * sentinel_username needs a sentinel_password). Returns 0 or PERFC_EINVAL
 * with a message. */
int perfc__redis_sentinel_check(const perfc_redis_opts *o);

/* The shared object for o->sentinels, o->master_name and the AUTH
 * credentials (o->username/password for the master and replicas,
 * o->sentinel_username/sentinel_password for the sentinels; copied) (created,
 * with its watcher thread, on first use; connect and command timeouts from the
 * first user). Returns 0, PERFC_EINVAL, PERFC_ENOMEM or PERFC_ETHREAD.
 * Release with perfc__redis_sentinel_put(). */
int perfc__redis_sentinel_get(perfc__redis_sentinel **out,
                              const perfc_redis_opts *o);
void perfc__redis_sentinel_put(perfc__redis_sentinel *s);

/* The object's own copies, valid until the last put(): users keep these
 * in their resolved options instead of the caller's borrowed ones. */
const char *const *perfc__redis_sentinel_addrs(const perfc__redis_sentinel *s,
                                               size_t *n);
const char *perfc__redis_sentinel_name(const perfc__redis_sentinel *s);

/* Blocking (pool and subscriber threads): a connection to the current
 * master with `command_timeout_ms` as its socket timeout, whose ROLE said
 * master, registered under the epoch stored in `*epoch`. Resolves first
 * when no address is known or the last one is suspect. NULL on failure
 * with the reason in `err` (which sentinel said what). Bounded by about
 * 2 * n_sentinels * (connect + command timeout) when every sentinel hangs;
 * refused connections fail at once. `*rc` is then PERFC_ECONFIG when an
 * AUTH was refused (the master's or a sentinel's), else PERFC_EIO. Free
 * with perfc__redis_sentinel_close(). */
redisContext *perfc__redis_sentinel_connect(perfc__redis_sentinel *s,
                                            int64_t connect_timeout_ms,
                                            int64_t command_timeout_ms,
                                            uint64_t *epoch, char *err,
                                            size_t errlen, int *rc);
/* Unregisters `ctx`'s socket and frees it. NULL is a no-op. */
void perfc__redis_sentinel_close(perfc__redis_sentinel *s, redisContext *ctx);

/* Non-blocking (the loops): the last confirmed master's address, copied.
 * When it is suspect a resolution is requested from the watcher and the
 * old address is still returned (a dead master refuses at once; a live
 * one may still be right). PERFC_EUNAVAILABLE when no master was ever
 * confirmed (a resolution is then requested too). */
int perfc__redis_sentinel_peek(perfc__redis_sentinel *s, char *host,
                               size_t hostlen, int *port, uint64_t *epoch);

/* Registers / unregisters a socket connected to the master of `epoch`
 * (the async client's): shut down (not closed) on a switch. Unregister
 * before closing the socket. */
void perfc__redis_sentinel_track(perfc__redis_sentinel *s, int fd,
                                 uint64_t epoch);
void perfc__redis_sentinel_untrack(perfc__redis_sentinel *s, int fd);

/* A connection to the master of `epoch` failed: ask the sentinels again
 * (on the watcher thread; the next blocking connect does it inline). A
 * report about an older epoch is ignored. Non-blocking. */
void perfc__redis_sentinel_suspect(perfc__redis_sentinel *s, uint64_t epoch);

/* The current epoch: it advances each time the confirmed master's address
 * changes. A connection made under an older one is to an old master. */
uint64_t perfc__redis_sentinel_epoch(const perfc__redis_sentinel *s);

/* Called after each switch on the thread that learned it (the watcher or
 * a pool thread), with no lock of the sentinel held but the listener
 * list's: it must not call listen/unlisten. */
typedef void (*perfc__redis_sentinel_fn)(void *user_data);
int perfc__redis_sentinel_listen(perfc__redis_sentinel *s,
                                 perfc__redis_sentinel_fn fn, void *ud);
/* After it returns, `fn` is not running and will not run for `ud`. */
void perfc__redis_sentinel_unlisten(perfc__redis_sentinel *s,
                                    perfc__redis_sentinel_fn fn, void *ud);

#endif /* PERFC_REDIS_SENTINEL_H */

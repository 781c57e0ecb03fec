/*
 * perfc/redis_async.h — Redis on perfc's event loops: commands with
 * callbacks, no thread blocked, auto-pipelined.
 *
 * A client holds `conns_per_loop` connections per loop that uses it
 * (hiredis's redisAsyncContext with an adapter for perfc/loop.h). A
 * command issued on a loop thread (an inline handler on the h2 transport,
 * or a continuation) goes out on that loop's connections and its callback
 * runs on that loop. Commands issued during one loop iteration leave in
 * one write per connection, at the end of the iteration: many calls share
 * one system call each way. A command issued from a thread without a loop
 * (a pool worker, the C core transport's pollers, any other thread) is
 * handed to the client's own loop thread, started at the first such
 * command, and its callback runs there.
 *
 * Every command that was accepted (the function returned 0) gets its
 * callback exactly once: with the reply, or with an error when no reply
 * came within `command_timeout_ms` (PERFC_ETIMEDOUT, as the synchronous
 * pool reports it), when the connection was lost with the command in
 * flight (PERFC_EUNAVAILABLE), or when the loop or the client stopped
 * (PERFC_ESHUTDOWN). Replies are matched to commands in order on each
 * connection; a connection that lost one command's reply (timeout) is
 * closed, so no command ever gets another's reply. Lost connections are
 * opened again after `backoff_min_ms`, doubling to `backoff_max_ms`; while
 * a loop has no usable connection its commands are refused at once with
 * PERFC_EUNAVAILABLE (the caller falls back in microseconds instead of
 * waiting).
 *
 * With a deferred call (perfc/deferred.h) a handler reads Redis without
 * holding a thread; docs/data-layer.md, "Redis on the loops", has a worked
 * example.
 *
 * Room: runtime public headers; implemented in libperfc-data
 * (data/redis_async.c). hiredis 0.14: no RESP3, no TLS.
 */
#ifndef PERFC_REDIS_ASYNC_H
#define PERFC_REDIS_ASYNC_H

#include "perfc/common.h"
#include "perfc/metrics.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct perfc_redis_async perfc_redis_async;

/** One connection per loop: a loop already gathers every command of an
 *  iteration into one write, and Redis serves one connection's pipeline
 *  as fast as several. More spread the replies of a slow one. */
#define PERFC_DEFAULT_REDIS_ASYNC_CONNS_PER_LOOP 1u
/** Commands in flight on one connection before it refuses more
 *  (PERFC_EFULL): bounds the memory a stalled server can make a loop
 *  hold. */
#define PERFC_DEFAULT_REDIS_ASYNC_MAX_PENDING 65536u
/* Timeouts and backoff default as the synchronous pool's (perfc/redis.h):
 * PERFC_DEFAULT_REDIS_CONNECT_TIMEOUT_MS, _COMMAND_TIMEOUT_MS,
 * _BACKOFF_MIN_MS, _BACKOFF_MAX_MS (200, 200, 50, 1000 ms). */

typedef struct perfc_redis_async_opts {
  /** IPv4/IPv6 address or host name (resolved at each connect, on the
   *  loop: prefer an address). NULL = PERFC_DEFAULT_REDIS_HOST. */
  const char *host;
  int port;                   /**< 0 = PERFC_DEFAULT_REDIS_PORT */
  unsigned conns_per_loop;    /**< 0 = default */
  int64_t connect_timeout_ms; /**< 0 = default */
  int64_t command_timeout_ms; /**< 0 = default */
  int64_t backoff_min_ms;     /**< 0 = default */
  int64_t backoff_max_ms;     /**< 0 = default; raised to backoff_min_ms */
  unsigned max_pending;       /**< per connection; 0 = default */
  /** Value of the metrics' `client` label; copied. NULL =
   *  PERFC_DEFAULT_REDIS_NAME. Clients with one name in one registry share
   *  their series. */
  const char *name;
  /** Registry for the metrics; borrowed, must outlive the client. NULL =
   *  the default registry. */
  perfc_metrics_registry *registry;
  /** Redis Cluster seed nodes, "host:port" each (copied).
   *  n_cluster_nodes > 0 makes this a cluster client: host/port are
   *  ignored, each node gets its own client with these options (its
   *  connections per loop, timeouts, backoff), a command goes to the
   *  master of its first key's slot, MOVED updates the slot map and sends
   *  the command again, ASK sends ASKING and the command on one
   *  connection of the new node (at most 5 redirections), and the map is
   *  read again (CLUSTER SLOTS, on the loop) after a redirection or an
   *  error and every cluster_refresh_ms. Unlike the synchronous pool, a
   *  multi-key command is not split: its keys must share a slot (a hash
   *  tag), or the node answers CROSSSLOT. See docs/data-layer.md. */
  const char *const *cluster_nodes;
  size_t n_cluster_nodes;
  /** Periodic slot map refresh; 0 = PERFC_DEFAULT_REDIS_CLUSTER_REFRESH_MS. */
  int64_t cluster_refresh_ms;
  /** Redis Sentinel, as perfc_redis_opts' fields of these names (copied;
   *  host and port are then ignored): the loops connect to the master the
   *  sentinels name and confirmed with ROLE, and on a switch the
   *  connections to the old master are shut down (their commands fail with
   *  PERFC_EUNAVAILABLE) and reopened to the new one. */
  const char *const *sentinels;
  size_t n_sentinels;
  const char *master_name;
  /** Redis AUTH, as perfc_redis_opts' fields of these names (copied; never
   *  logged; NULL or "" = none): `AUTH [username] password` is the first
   *  command queued on each new connection, ahead of any command. A
   *  refused AUTH closes the connection (the commands queued behind it
   *  fail with PERFC_EUNAVAILABLE), logs "AUTH failed" at most once per
   *  backoff_max_ms per client, and the connection is reopened after the
   *  backoff, doubling as after a failed connect. sentinel_password
   *  (and sentinel_username, their ACL user) are the sentinels' own. */
  const char *username;
  const char *password;
  const char *sentinel_password;
  const char *sentinel_username;
} perfc_redis_async_opts;

/** Fills `o` with the defaults. */
PERFC_API void perfc_redis_async_opts_init(perfc_redis_async_opts *o);

/** A client (`opts` copied; NULL = defaults). Connects lazily, per loop,
 *  at its first command there: a server that is down does not fail this.
 *  Returns 0, PERFC_EINVAL (negative or too large durations, with a
 *  message) or PERFC_ENOMEM. */
PERFC_API int perfc_redis_async_new(perfc_redis_async **out,
                                    const perfc_redis_async_opts *opts);

/** Closes every connection (commands in flight get PERFC_ESHUTDOWN, on
 *  their loops) and frees the client. Call it when no thread issues
 *  commands any more, after the servers whose handlers use it stopped (or
 *  while their loops still run: each loop's connections are closed on
 *  that loop, and this waits for it); never from one of its callbacks.
 *  NULL is a no-op. */
PERFC_API void perfc_redis_async_free(perfc_redis_async *r);

/** Reply types (hiredis's numbering). */
typedef enum perfc_redis_reply_type {
  PERFC_REDIS_REPLY_STRING = 1,
  PERFC_REDIS_REPLY_ARRAY = 2,
  PERFC_REDIS_REPLY_INTEGER = 3,
  PERFC_REDIS_REPLY_NIL = 4,
  PERFC_REDIS_REPLY_STATUS = 5,
  PERFC_REDIS_REPLY_ERROR = 6
} perfc_redis_reply_type;

/** A reply, borrowed for the callback: copy what you keep. */
typedef struct perfc_redis_reply {
  perfc_redis_reply_type type;
  int64_t integer;                       /**< INTEGER */
  const char *str;                       /**< STRING, STATUS, ERROR */
  size_t len;
  size_t elements;                       /**< ARRAY */
  const struct perfc_redis_reply *element;
} perfc_redis_reply;

/** A command's callback: `rc` 0 with `reply` (an ERROR reply is a reply:
 *  check reply->type), or PERFC_ETIMEDOUT, PERFC_EUNAVAILABLE,
 *  PERFC_ESHUTDOWN, PERFC_ENOMEM with `reply` NULL and the reason in
 *  perfc_last_error(). Runs on the loop that issued the command (or the
 *  client's own loop). */
typedef void (*perfc_redis_async_fn)(int rc, const perfc_redis_reply *reply,
                                     void *user_data);

/** A GET's callback: `rc` 0 with the value (`value`, `len`, borrowed for
 *  the callback), PERFC_ENOENT (no such key), PERFC_EIO (an error reply,
 *  e.g. the key holds another type: perfc_last_error() says which) or one
 *  of the errors above. */
typedef void (*perfc_redis_async_get_fn)(int rc, const uint8_t *value,
                                         size_t len, void *user_data);

/** Any command, binary safe: `argv[i]` of `argvlen[i]` bytes (copied
 *  before this returns; argvlen NULL: NUL-terminated strings). Returns 0
 *  (`fn` will run exactly once), PERFC_EINVAL, PERFC_EUNAVAILABLE (no
 *  connection of this loop is usable now: reconnecting after a failure),
 *  PERFC_EFULL (max_pending on every connection of this loop),
 *  PERFC_ESHUTDOWN or PERFC_ENOMEM; then `fn` never runs. */
PERFC_API int perfc_redis_async_command(perfc_redis_async *r, int argc,
                                        const char *const *argv,
                                        const size_t *argvlen,
                                        perfc_redis_async_fn fn,
                                        void *user_data);

/** GET `key` (a C string; copied). Returns as perfc_redis_async_command. */
PERFC_API int perfc_redis_async_get(perfc_redis_async *r, const char *key,
                                    perfc_redis_async_get_fn fn,
                                    void *user_data);

/* Metrics (registry and `client` label from the options):
 * perfc_redis_async_commands_total, perfc_redis_async_writes_total
 * (write(2) calls that sent commands: commands / writes is the pipelining
 * factor), perfc_redis_async_errors_total{kind="timeout"|"unavailable"|
 * "shutdown"} (callbacks run with that error), and the gauge
 * perfc_redis_async_connections (connected now). */

/** Counters summed over every loop's connections (racy reads). */
typedef struct perfc_redis_async_stats {
  uint64_t commands;    /**< accepted */
  uint64_t writes;      /**< write(2) calls that sent commands */
  uint64_t replies;     /**< callbacks run with a reply */
  uint64_t timeouts;    /**< callbacks run with PERFC_ETIMEDOUT */
  uint64_t failed;      /**< callbacks run with another error */
  uint64_t connects;    /**< connections established (with a password:
                             only those whose AUTH succeeded) */
  unsigned conns_up;    /**< connected (and authenticated) now */
} perfc_redis_async_stats;

PERFC_API void perfc_redis_async_stats_get(perfc_redis_async *r,
                                           perfc_redis_async_stats *out);

#ifdef __cplusplus
}
#endif

#endif /* PERFC_REDIS_ASYNC_H */

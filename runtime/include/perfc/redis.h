/*
 * perfc/redis.h — a bounded pool of blocking hiredis connections to one
 * Redis server, the batched commands the cache needs (MGET, pipelined
 * SET ... PX, DEL with retries, PUBLISH), and a pub/sub subscriber thread.
 *
 * Room: runtime public headers (data layer, Redis). hiredis is a private
 * dependency: nothing here exposes its types. Thread-safe: every pool
 * function may be called from any thread.
 *
 * Failure is bounded: a connect waits at most connect_timeout_ms, a command
 * at most command_timeout_ms, waiting for a free connection at most
 * acquire_timeout_ms; after a failed connect or a timed-out command the
 * pool refuses at once (PERFC_EIO) until its backoff passes, then lets one
 * call probe the server, so a dead or hung server costs callers
 * microseconds, not timeouts. See docs/data-layer.md.
 *
 * With `sentinels` and `master_name` set, "one Redis server" is the master
 * Redis Sentinel names, followed across failovers (docs/data-layer.md,
 * "Redis Sentinel").
 */
#ifndef PERFC_REDIS_H
#define PERFC_REDIS_H

#include "perfc/common.h"
#include "perfc/metrics.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A pool of connections to one server. Opaque. */
typedef struct perfc_redis_pool perfc_redis_pool;
/** A pub/sub subscriber running on its own thread and connection. Opaque. */
typedef struct perfc_redis_subscriber perfc_redis_subscriber;

#define PERFC_DEFAULT_REDIS_HOST "127.0.0.1"
#define PERFC_DEFAULT_REDIS_PORT 6379
/** Connections per pool. */
#define PERFC_DEFAULT_REDIS_POOL_SIZE 8u
/** TCP connect bound. Loopback or same-rack Redis connects in well under a
 *  millisecond; a server that takes longer is treated as down. */
#define PERFC_DEFAULT_REDIS_CONNECT_TIMEOUT_MS 200u
/** Bound on one command (or one pipelined batch) round trip. A timeout
 *  makes the pool refuse calls for a backoff, as a failed connect does:
 *  connects to a hung server succeed, so without that every call would
 *  wait this long. */
#define PERFC_DEFAULT_REDIS_COMMAND_TIMEOUT_MS 200u
/** Bound on waiting for a free connection when all are in use. */
#define PERFC_DEFAULT_REDIS_ACQUIRE_TIMEOUT_MS 100u
/** How long the pool refuses calls after a failed connect or a timed-out
 *  command; then one call probes the server. Doubles per failed probe. */
#define PERFC_DEFAULT_REDIS_BACKOFF_MIN_MS 50u
/** Backoff ceiling: the longest a recovered server goes unused. */
#define PERFC_DEFAULT_REDIS_BACKOFF_MAX_MS 1000u
/** An idle connection unused for longer is PINGed before it is handed out. */
#define PERFC_DEFAULT_REDIS_HEALTH_CHECK_MS 5000u
/** Extra attempts perfc_redis_del() makes after a failure. */
#define PERFC_DEFAULT_REDIS_DEL_RETRIES 2u
/** Keys per MGET command; a bigger batch is split into several MGETs sent
 *  in one pipeline. */
#define PERFC_DEFAULT_REDIS_BATCH_KEYS 256u
/** Label value of the pool's metrics. */
#define PERFC_DEFAULT_REDIS_NAME "default"

/** The longest duration the Redis options take: 24 days (the pool keeps
 *  them, and doubles its backoff, in 32-bit milliseconds). */
#define PERFC_REDIS_MAX_DURATION_MS INT32_MAX

/** Options for perfc_redis_pool_new() and perfc_redis_subscriber_new();
 *  fill with perfc_redis_opts_init(). A zero field means its
 *  PERFC_DEFAULT_REDIS_* value (what perfc_redis_opts_init() writes), so
 *  `= {0}` plus a port works. The struct is copied whole; durations are
 *  milliseconds, 0 to PERFC_REDIS_MAX_DURATION_MS (negative is
 *  PERFC_EINVAL). */
typedef struct perfc_redis_opts {
  /** Server host name or address; borrowed during perfc_redis_pool_new()
   *  (copied). NULL = PERFC_DEFAULT_REDIS_HOST. */
  const char *host;
  /** TCP port, 1 to 65535. 0 = PERFC_DEFAULT_REDIS_PORT. */
  int port;
  unsigned pool_size;         /**< 0 = default */
  int64_t connect_timeout_ms; /**< 0 = default */
  int64_t command_timeout_ms; /**< 0 = default */
  int64_t acquire_timeout_ms; /**< 0 = default */
  int64_t backoff_min_ms;     /**< 0 = default */
  int64_t backoff_max_ms;     /**< 0 = default; raised to backoff_min_ms */
  int64_t health_check_ms;    /**< 0 = default */
  unsigned del_retries;       /**< 0 = default */
  unsigned batch_keys;        /**< 0 = default */
  /** Registry for the pool's metrics; borrowed, must outlive the pool.
   *  NULL = the default registry. */
  perfc_metrics_registry *registry;
  /** Value of the `pool` label; copied. NULL = PERFC_DEFAULT_REDIS_NAME.
   *  Two pools with one name in one registry share their series. */
  const char *name;
  /** For the asynchronous client made from this pool's options (the
   *  cache's, perfc_cache_opts.no_async_l2 off; perfc/redis_async.h):
   *  its connections per event loop, 1..64. The pool itself ignores it.
   *  0 = PERFC_DEFAULT_REDIS_ASYNC_CONNS_PER_LOOP. */
  unsigned async_conns_per_loop;
  /** Redis Cluster seed nodes, "host:port" each (borrowed during
   *  perfc_redis_pool_new(); copied). n_cluster_nodes > 0 turns the pool
   *  (and the cache's async client and subscriber made from its options)
   *  into a cluster client: host/port are ignored, the slot map is read
   *  from a seed with CLUSTER SLOTS, every command goes to the master of
   *  its key's slot, MOVED/ASK redirections are followed, multi-key
   *  MGET/DEL are split per slot, PUBLISH becomes SPUBLISH and the
   *  subscriber SSUBSCRIBEs (sharded pub/sub, Redis 7). At most
   *  PERFC_REDIS_CLUSTER_MAX_NODES. See docs/data-layer.md, "Redis
   *  Cluster". */
  const char *const *cluster_nodes;
  size_t n_cluster_nodes;
  /** Cluster only: nonzero sends single-key reads (GET, MGET, EXISTS) to a
   *  replica of the slot over READONLY connections (stale by the
   *  replication lag; an acknowledged write may not be visible yet). */
  int cluster_read_replicas;
  /** Cluster only: how often the slot map is read again even without a
   *  redirection or error. 0 = PERFC_DEFAULT_REDIS_CLUSTER_REFRESH_MS. */
  int64_t cluster_refresh_ms;
  /** Redis Sentinel (docs/data-layer.md, "Redis Sentinel"): "HOST:PORT"
   *  of each sentinel, borrowed during the call that takes these options
   *  (copied). With n_sentinels > 0 the pool, its subscriber and the async
   *  client made from these options connect to the master the sentinels
   *  name for `master_name` (confirmed with ROLE) and follow it across
   *  failovers; `host` and `port` are then ignored. NULL/0 = one server at
   *  host:port. */
  const char *const *sentinels;
  size_t n_sentinels;
  /** The master's name as the sentinels monitor it; copied. Required with
   *  sentinels, refused without them (PERFC_EINVAL). */
  const char *master_name;
  /** Writes acknowledged means replicated: perfc_redis_set(),
   *  perfc_redis_set_many(), perfc_redis_del() and the cache's
   *  invalidation DEL send `WAIT wait_replicas command_timeout_ms/2` in the
   *  same round trip and return PERFC_EIO unless that many replicas
   *  acknowledged (the write did happen on the master; the cache retries
   *  its DEL). Redis replication is asynchronous: without this, a write
   *  the master acknowledged can be lost when a replica is promoted.
   *  0 = off (acknowledged by the master). */
  unsigned wait_replicas;
  /** Redis AUTH (docs/data-layer.md, "Authentication"): every connection
   *  to a Redis server (the pool's, the subscriber's, the async client's
   *  made from these options, every cluster node's, the master and
   *  replicas a sentinel names) sends `AUTH username password` (Redis 6
   *  ACL user) or, without a username, `AUTH password` as its first
   *  command. Copied at creation; never logged. NULL or "" = no AUTH. A
   *  refused AUTH (WRONGPASS, "invalid password") fails the connect:
   *  calls return PERFC_ECONFIG with "AUTH failed" and the server's
   *  address in perfc_last_error(), and the pool backs off as after a
   *  failed connect. A username without a password is PERFC_EINVAL. */
  const char *username;
  const char *password;
  /** Sentinel mode: the sentinels' own password (their `requirepass`),
   *  sent as `AUTH sentinel_password` on every connection to a sentinel.
   *  Copied; never logged. NULL or "" = no AUTH to the sentinels. */
  const char *sentinel_password;
  /** Sentinel mode: the sentinels' ACL user (Redis 6.2+ sentinels: a
   *  `user` line in sentinel.conf); with it `AUTH sentinel_username
   *  sentinel_password` is sent instead. Copied. NULL or "" = the default
   *  user. Without sentinel_password it is PERFC_EINVAL. */
  const char *sentinel_username;
} perfc_redis_opts;

/** Nodes (masters and replicas) a cluster client knows at most. */
#define PERFC_REDIS_CLUSTER_MAX_NODES 256u
/** Periodic slot map refresh of a cluster client; a MOVED or a failed node
 *  triggers one at once (at most one per backoff_min_ms). */
#define PERFC_DEFAULT_REDIS_CLUSTER_REFRESH_MS 5000u

/** Fills `o` with the PERFC_DEFAULT_REDIS_* values. */
PERFC_API void perfc_redis_opts_init(perfc_redis_opts *o);

/** Creates a pool. Connections are opened lazily, on first use, so a
 *  server that is down does not make this fail. Registers the metrics
 *  perfc_redis_pool_connections{pool,state}, perfc_redis_pool_wait_seconds
 *  {pool}, perfc_redis_errors_total{pool}, perfc_redis_connects_total{pool}.
 *  `opts` may be NULL. Returns 0, PERFC_EINVAL, PERFC_EEXIST (metric name
 *  clash) or PERFC_ENOMEM. The caller frees it with perfc_redis_pool_free(). */
PERFC_API int perfc_redis_pool_new(perfc_redis_pool **out,
                                   const perfc_redis_opts *opts);

/** Closes every connection and frees the pool. No call may be running on
 *  it. NULL is a no-op. */
PERFC_API void perfc_redis_pool_free(perfc_redis_pool *p);

/** One value read by perfc_redis_get()/perfc_redis_mget(). `data` is
 *  malloc'd (the caller frees it, or uses perfc_redis_values_free()); NULL
 *  when `found` is 0. */
typedef struct perfc_redis_value {
  uint8_t *data;
  size_t len;
  int found;
} perfc_redis_value;

/** One item for perfc_redis_set_many(): SET key value PX ttl_ms. Borrowed. */
typedef struct perfc_redis_item {
  const char *key;
  perfc_slice value;
  int64_t ttl_ms; /**< 0 = no expiry; negative is PERFC_EINVAL */
} perfc_redis_item;

/* Errors every command function may return: PERFC_EIO (server down,
 *  connection lost, in reconnect backoff, or an error reply),
 *  PERFC_ETIMEDOUT (command or acquire timeout), PERFC_EINVAL, PERFC_ENOMEM;
 *  the message (which server, what failed) is in perfc_last_error(). A
 *  connection that saw an I/O error is closed, never reused. */

/** PING through the pool. Returns 0 or an error above. */
PERFC_API int perfc_redis_ping(perfc_redis_pool *p);

/** GET `key` (borrowed). On 0, `*out` (malloc'd, caller frees; non-NULL
 *  even for an empty value) holds `*out_len` bytes. PERFC_ENOENT when the
 *  key does not exist. */
PERFC_API int perfc_redis_get(perfc_redis_pool *p, const char *key,
                              uint8_t **out, size_t *out_len);

/** MGET of `n` keys (borrowed) in one round trip (split into pipelined MGETs
 *  of batch_keys keys). On 0, out[i] describes keys[i]; the caller frees
 *  the values with perfc_redis_values_free(out, n). On error out[] is all
 *  not-found and owns nothing. */
PERFC_API int perfc_redis_mget(perfc_redis_pool *p, const char *const *keys,
                               size_t n, perfc_redis_value *out);

/** Frees out[i].data for i < n and marks them not found. */
PERFC_API void perfc_redis_values_free(perfc_redis_value *out, size_t n);

/** Pipelines `n` SET key value [PX ttl] commands in one round trip. Returns
 *  0 only if every SET succeeded. */
PERFC_API int perfc_redis_set_many(perfc_redis_pool *p,
                                   const perfc_redis_item *items, size_t n);

/** SET `key` `value` PX `ttl_ms` (0 = no expiry). */
PERFC_API int perfc_redis_set(perfc_redis_pool *p, const char *key,
                              perfc_slice value, int64_t ttl_ms);

/** DEL of `n` keys in one command, retried up to del_retries more times
 *  while it fails with PERFC_EIO or PERFC_ETIMEDOUT, pausing before each
 *  retry backoff_min_ms doubling per attempt (longer if the pool is still
 *  refusing, never more than backoff_max_ms). With the defaults, a DEL to a
 *  server that is down returns after about 150 ms. Returns 0 when the
 *  server executed it (whether or not the keys existed) or the last error. */
PERFC_API int perfc_redis_del(perfc_redis_pool *p, const char *const *keys,
                              size_t n);

/** PUBLISH `message` (borrowed) on `channel`. */
PERFC_API int perfc_redis_publish(perfc_redis_pool *p, const char *channel,
                                  perfc_slice message);

/** A snapshot of the pool. */
typedef struct perfc_redis_pool_stats {
  unsigned in_use;   /**< connections handed out now */
  unsigned idle;     /**< connected and idle now */
  uint64_t connects; /**< successful connects since creation */
  uint64_t errors;   /**< failed connects, I/O errors, timeouts, refusals */
  int backing_off;   /**< 1 while the server is suspect (calls refused
                          except one probe at a time) */
} perfc_redis_pool_stats;

/** Fills `*out`. */
PERFC_API void perfc_redis_pool_stats_get(perfc_redis_pool *p,
                                          perfc_redis_pool_stats *out);

/* ---- pub/sub ---- */

/** What a subscriber callback is told. */
typedef enum perfc_redis_sub_event {
  /** A message arrived on the channel. */
  PERFC_REDIS_SUB_MESSAGE = 0,
  /** The subscription is (again) active. After a reconnect, messages
   *  published while disconnected are lost: a receiver that caches should
   *  treat this event as "anything may have changed". */
  PERFC_REDIS_SUB_SUBSCRIBED = 1,
  /** The subscription that was active is lost (connection error, or the
   *  server stopped answering the subscriber's heartbeat PINGs): messages
   *  may be missed until the next PERFC_REDIS_SUB_SUBSCRIBED. */
  PERFC_REDIS_SUB_UNSUBSCRIBED = 2
} perfc_redis_sub_event;

/** Called on the subscriber's thread, one call at a time. `channel` and
 *  `message` are borrowed for the duration of the call (message is empty
 *  for the SUBSCRIBED and UNSUBSCRIBED events). Must not free the
 *  subscriber. */
typedef void (*perfc_redis_message_fn)(perfc_redis_sub_event event,
                                       const char *channel, perfc_slice message,
                                       void *user_data);

/** Starts a thread that connects to the server in `opts` (host, port,
 *  timeouts, backoff; pool fields ignored), SUBSCRIBEs to `channel`
 *  (copied) and calls `fn` for each event, reconnecting with backoff
 *  whenever the connection fails. `user_data` is borrowed and must outlive
 *  the subscriber. Returns 0, PERFC_EINVAL, PERFC_ENOMEM or PERFC_ETHREAD
 *  (and then `fn` is never called). Free with perfc_redis_subscriber_free(). */
PERFC_API int perfc_redis_subscriber_new(perfc_redis_subscriber **out,
                                         const perfc_redis_opts *opts,
                                         const char *channel,
                                         perfc_redis_message_fn fn,
                                         void *user_data);

/** Waits until the subscription is active (the server confirmed
 *  SUBSCRIBE and the callback has been told). Returns 0, or
 *  PERFC_ETIMEDOUT after `timeout_ms`. */
PERFC_API int perfc_redis_subscriber_wait_ready(perfc_redis_subscriber *s,
                                                int64_t timeout_ms);

/** Stops the thread (within about 100 ms), closes its connection and frees
 *  `s`. `fn` is not called after this returns. NULL is a no-op. */
PERFC_API void perfc_redis_subscriber_free(perfc_redis_subscriber *s);

#ifdef __cplusplus
}
#endif
#endif /* PERFC_REDIS_H */

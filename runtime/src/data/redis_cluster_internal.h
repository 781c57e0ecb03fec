/*
 * redis_cluster_internal.h — the Redis Cluster pieces the synchronous pool
 * (redis.c), its subscriber and the asynchronous client (redis_async.c)
 * share: key slots (CRC16 with hash tags), the node table and slot map,
 * MOVED/ASK parsing, which argument of a command is its key, and the
 * synchronous router behind perfc__redis_pipeline() in cluster mode.
 *
 * Room: runtime/src/data private header (data layer, Redis). Not installed.
 * Design: docs/data-layer.md, "Redis Cluster".
 */
#ifndef PERFC_REDIS_CLUSTER_INTERNAL_H
#define PERFC_REDIS_CLUSTER_INTERNAL_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

#include "data/redis_internal.h"
#include "perfc/redis.h"
#include "perfc/redis_async.h"

#define PERFC__RC_SLOTS 16384u

/* CRC16-CCITT (XMODEM: poly 0x1021, init 0), as the cluster spec. */
unsigned perfc__rc_crc16(const void *buf, size_t len);

/* The slot of `key`: CRC16 of the hash tag (the bytes between the first
 * '{' and the first '}' after it, when not empty) or of the whole key,
 * modulo 16384. */
unsigned perfc__rc_slot(const char *key, size_t len);

/* A MOVED or ASK error reply, parsed. */
typedef struct perfc__rc_redirect {
  int ask; /* 1 ASK, 0 MOVED */
  unsigned slot;
  char host[256];
  int port;
} perfc__rc_redirect;

/* 1 and *out filled when `s` (an error reply's text) is "MOVED <slot>
 * <host>:<port>" or "ASK ..."; 0 for any other text. */
int perfc__rc_parse_redirect(const char *s, size_t len,
                             perfc__rc_redirect *out);

/* Parses "host:port" (IPv6 as "[addr]:port" or its last ':'). 0 or
 * PERFC_EINVAL. */
int perfc__rc_parse_hostport(const char *s, char *host, size_t hcap, int *port);

/* The argv index of the key that routes a command, or -1 when it has none
 * (PING, SCRIPT, CLUSTER, ...): argv[1] for ordinary key commands and
 * SPUBLISH, the first key of EVAL/EVALSHA (argv[3] when numkeys > 0). */
int perfc__rc_key_index(int argc, const char *const *argv,
                        const size_t *argvlen);

/* Multi-key commands whose keys may be split per slot: MGET (reply: the
 * values reassembled in order), DEL, UNLINK, EXISTS, TOUCH (reply: the
 * integers summed). 1 for MGET, 2 for the summed ones, 0 otherwise. */
int perfc__rc_split_kind(const char *cmd, size_t len);

/* 1 for the read commands a replica may serve (GET, MGET, EXISTS, ...). */
int perfc__rc_is_read(const char *cmd, size_t len);

/* ---- node table and slot map ---- */

typedef struct perfc__rc perfc__rc;

/* Makes the client of one node (a single-node perfc_redis_pool or
 * perfc_redis_async); `readonly` asks its connections to send READONLY.
 * NULL on failure. */
typedef void *(*perfc__rc_node_new_fn)(void *ud, const char *host, int port,
                                       int readonly);
typedef void (*perfc__rc_node_free_fn)(void *ud, void *client);

typedef struct perfc__rc_opts {
  const char *const *seeds;
  size_t n_seeds;
  int read_replicas;
  int64_t refresh_ms;     /* periodic refresh */
  int64_t refresh_gap_ms; /* least time between two refreshes */
  perfc__rc_node_new_fn node_new;
  perfc__rc_node_free_fn node_free;
  void *ud;
} perfc__rc_opts;

/* Validates the seeds (PERFC_EINVAL with a message naming the bad one),
 * creates their clients lazily. */
int perfc__rc_new(perfc__rc **out, const perfc__rc_opts *o);
void perfc__rc_free(perfc__rc *rc);

/* The node `host:port`, added when new (its client made then). Returns its
 * index or PERFC_EFULL/PERFC_ENOMEM. Thread-safe. */
int perfc__rc_node(perfc__rc *rc, const char *host, int port, int readonly);
unsigned perfc__rc_nnodes(perfc__rc *rc);
void *perfc__rc_client(perfc__rc *rc, int idx);
const char *perfc__rc_host(perfc__rc *rc, int idx);
int perfc__rc_port(perfc__rc *rc, int idx);
int perfc__rc_read_replicas(perfc__rc *rc);

/* The node that serves `slot`: its master, or (replica != 0 and a replica
 * known) one of its replicas. When the map does not know the slot yet, a
 * node to try (a seed or any known master): its MOVED teaches the map. */
int perfc__rc_route(perfc__rc *rc, unsigned slot, int replica);

/* A node for a keyless command, rotating over the known masters. */
int perfc__rc_any(perfc__rc *rc);

/* The distinct masters of the current map (the seeds before the first
 * refresh). Returns how many were written to idx[] (at most cap). */
size_t perfc__rc_masters(perfc__rc *rc, int *idx, size_t cap);

/* A MOVED: `slot` now belongs to node `idx`; asks for a refresh too. */
void perfc__rc_moved(perfc__rc *rc, unsigned slot, int idx);

/* Asks for a refresh at the next chance (after an error or a MOVED). */
void perfc__rc_want_refresh(perfc__rc *rc);

/* Claims the refresh when one is due (asked for and refresh_gap_ms since
 * the last, or refresh_ms since the last) and no one else refreshes. 1:
 * the caller refreshes and calls perfc__rc_refresh_done(). */
int perfc__rc_refresh_claim(perfc__rc *rc);
void perfc__rc_refresh_done(perfc__rc *rc, int ok);

/* Replaces the slot map with a CLUSTER SLOTS reply. 0 or PERFC_EIO (the
 * reply is not a slot map; nothing changed). */
int perfc__rc_apply_slots(perfc__rc *rc, const perfc_redis_reply *r);

/* A hiredis reply as a perfc_redis_reply (pointing into `in`); release
 * with perfc__rc_reply_release(). 0 or PERFC_ENOMEM. */
int perfc__rc_reply_convert(const redisReply *in, perfc_redis_reply *out);
void perfc__rc_reply_release(perfc_redis_reply *r);

/* ---- the synchronous pool in cluster mode (redis.c) ---- */

/* A cluster over single-node pools made from `o` (copied per node). */
int perfc__redis_cluster_new(perfc__rc **out, const perfc_redis_opts *o);

/* perfc__redis_pipeline() on a cluster: every command to the node of its
 * key's slot (pipelined per node), split multi-key commands reassembled,
 * MOVED and ASK followed (at most PERFC__RC_MAX_REDIRECTS rounds), a
 * failed node making the map refresh. Same contract as the single-node
 * call. */
#define PERFC__RC_MAX_REDIRECTS 5
int perfc__redis_cluster_pipeline(perfc__rc *rc, const perfc__redis_cmd *cmds,
                                  size_t n, redisReply **replies);

/* Reads the slot map through any reachable node now. 0 or an error. */
int perfc__redis_cluster_refresh(perfc__rc *rc);

/* Sums the node pools' stats. */
void perfc__redis_cluster_stats(perfc__rc *rc, perfc_redis_pool_stats *out);

/* The pool's cluster, NULL for a single-node pool. */
perfc__rc *perfc__redis_pool_cluster(const perfc_redis_pool *p);

#endif /* PERFC_REDIS_CLUSTER_INTERNAL_H */

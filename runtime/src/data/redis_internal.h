/*
 * redis_internal.h — what the cache module needs from the Redis pool beyond
 * the public API: arbitrary pipelined commands with hiredis replies (the
 * lease and fill Lua scripts, DEL of a key with its lease).
 *
 * Room: runtime/src/data private header (data layer, Redis). Not installed.
 */
#ifndef PERFC_REDIS_INTERNAL_H
#define PERFC_REDIS_INTERNAL_H

#include <hiredis/hiredis.h>

#include "perfc/redis.h"

/* One command of a pipeline. All pointers are borrowed for the call. */
typedef struct perfc__redis_cmd {
  int argc;
  const char **argv;
  const size_t *argvlen;
} perfc__redis_cmd;

/* Sends `n` commands in one write and reads `n` replies on one pooled
 * connection. On 0 every replies[i] is set (possibly an error reply) and the
 * caller frees each with freeReplyObject(). On error (PERFC_EIO,
 * PERFC_ETIMEDOUT, PERFC_ENOMEM, PERFC_ESHUTDOWN) replies[] are all NULL
 * and the connection, if it failed, was closed. Counts errors in the pool's
 * metrics. */
int perfc__redis_pipeline(perfc_redis_pool *p, const perfc__redis_cmd *cmds,
                          size_t n, redisReply **replies);

/* perfc__redis_pipeline() for writes: with the pool's wait_replicas set,
 * a WAIT follows the commands in the same round trip, and unless that many
 * replicas acknowledged within half the command timeout the call returns
 * PERFC_EIO (the commands did run on the master; replies[] are all NULL).
 * Without wait_replicas it is perfc__redis_pipeline(). */
int perfc__redis_pipeline_replicated(perfc_redis_pool *p,
                                     const perfc__redis_cmd *cmds, size_t n,
                                     redisReply **replies);

/* Copies of the AUTH strings of a client's options (NULL when unset or
 * empty), owned by the client: perfc__redis_creds_copy() duplicates
 * o->username, o->password, o->sentinel_password and o->sentinel_username
 * and points `o` at the copies (PERFC_ENOMEM leaves nothing allocated);
 * perfc__redis_creds_free() clears the passwords and frees them. */
typedef struct perfc__redis_creds {
  char *username;
  char *password;
  char *sentinel_password;
  char *sentinel_username;
} perfc__redis_creds;
int perfc__redis_creds_copy(perfc__redis_creds *c, perfc_redis_opts *o);
void perfc__redis_creds_free(perfc__redis_creds *c);

/* Sends AUTH on a fresh blocking connection when `password` is set
 * (non-NULL, non-empty): `AUTH username password` with a username (Redis
 * 6 ACL), else `AUTH password`, in argv form. Returns 0 (also when there
 * is no password), PERFC_ECONFIG when the server refused it ("AUTH
 * failed..." and the server's error in `err`, never the password), or
 * PERFC_EIO / PERFC_ETIMEDOUT / PERFC_ENOMEM when no answer came. */
int perfc__redis_auth(redisContext *ctx, const char *username,
                      const char *password, char *err, size_t errlen);

/* The pool's resolved options (host, port, timeouts, backoff), borrowed for
 * the pool's lifetime: the cache starts its subscriber with them. */
const perfc_redis_opts *perfc__redis_pool_opts(const perfc_redis_pool *p);

#endif /* PERFC_REDIS_INTERNAL_H */

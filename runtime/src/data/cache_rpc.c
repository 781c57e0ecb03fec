/*
 * cache_rpc.c — the cache-aside wiring behind generated (perfc.cache) and
 * (perfc.invalidate) methods: perfc_cache around a unary handler.
 *
 * Room: runtime/src/data (data layer, generated-code contract). See
 * perfc/cache_rpc.h.
 */
#include "perfc/cache_rpc.h"

#include "data/cache_internal.h"
#include "core/pb_wire_internal.h"
#include "perfc/arena.h"
#include "perfc/deferred.h"
#include "perfc/loop.h"
#include "perfc/log.h"

#include <stdlib.h>
#include <string.h>

/* A load's gRPC status travels through perfc_cache's int error path (which
 * hands the same code to every call sharing the load) as a code below
 * every PERFC_E* value; the table never goes near it. */
#define STATUS_BASE (-0x10000)

/* The longest NOT_FOUND message kept with a cached "not found" (its note,
 * in L1 and Redis): a handler's message names the missing thing, and a
 * negative entry should stay small. Longer ones are cut at a UTF-8
 * character boundary. */
#define NOTE_MAX_BYTES 256

typedef struct load_call {
  perfc_ctx *ctx;
  const ProtobufCMessage *req;
  ProtobufCMessage *resp;
  perfc_cache_rpc_load_fn load;
  void *load_ud;
  int ran;                  /* this call's thread ran the load */
  perfc_status_code status; /* the load's status when ran */
} load_call;

/* The handler's NOT_FOUND message as the cached "not found"'s note (malloc'd
 * into *out, or nothing when it has none), so a later hit answers as the
 * handler did (not_found()). */
static void note_of(perfc_ctx *ctx, uint8_t **out, size_t *out_len) {
  const char *m = perfc_ctx_error_message(ctx);
  size_t n = m ? strlen(m) : 0;
  if (n > NOTE_MAX_BYTES) {
    n = NOTE_MAX_BYTES;
    while (n > 0 && ((unsigned char)m[n] & 0xC0) == 0x80)
      n--; /* m[n] continues a character: cut before it */
  }
  if (n > 0 && (*out = malloc(n)) != NULL) {
    memcpy(*out, m, n);
    *out_len = n;
  }
}

static int loader(const char *key, uint8_t **out, size_t *out_len,
                  void *user_data) {
  load_call *lc = user_data;
  (void)key;
  lc->ran = 1;
  lc->status = lc->load(lc->ctx, lc->req, lc->resp, lc->load_ud);
  if (lc->status == PERFC_STATUS_NOT_FOUND) {
    note_of(lc->ctx, out, out_len);
    return PERFC_ENOENT;
  }
  if (lc->status != PERFC_STATUS_OK)
    return STATUS_BASE - (int)lc->status;
  size_t n = protobuf_c_message_get_packed_size(lc->resp);
  /* malloc(0) may return NULL; the cache takes NULL only with length 0. */
  uint8_t *buf = malloc(n ? n : 1);
  if (!buf)
    return PERFC_ENOMEM;
  *out_len = protobuf_c_message_pack(lc->resp, buf);
  *out = buf;
  return 0;
}

/* A cached "not found": the handler's message kept with it (its note), or
 * a generic one when it has none (an entry from before notes, or filled by
 * other code). */
static perfc_status_code not_found(perfc_ctx *ctx, const uint8_t *note,
                                   size_t len) {
  if (note == NULL || len == 0)
    return perfc_ctx_error(ctx, PERFC_STATUS_NOT_FOUND, "not found");
  return perfc_ctx_error(ctx, PERFC_STATUS_NOT_FOUND, "%.*s", (int)len,
                         (const char *)note);
}

/* Answers a hit from the cached bytes `val` (`len` bytes in the call's
 * arena). The stored bytes are what this method's load packed, so they go
 * out as they are (perfc_ctx_set_raw_response): decoding them into C
 * structs only for the server to encode them again was most of what a hit
 * cost (for examples/user-service's User, ~4,000 of ~5,000 instructions),
 * and even carrying them as unknown fields through protobuf-c's pack cost
 * ~1,100 more. One walk over the fields checks they are well formed
 * (`plain`: L1 walked them when it stored them, so a hit skips it);
 * anything else (a group, damaged bytes), or a `resp` that is not the one
 * the server sends (a handler calling this for its own message), is
 * decoded into `resp` by protobuf-c. */
static perfc_status_code answer_hit(perfc_ctx *ctx, const char *key,
                                    ProtobufCMessage *resp, const uint8_t *val,
                                    size_t len, int plain) {
  if ((plain || perfc__pb_plain_fields(val, len) >= 0) &&
      perfc_ctx_set_raw_response(ctx, resp, val, len) == 0)
    return PERFC_STATUS_OK;
  ProtobufCAllocator al = perfc_arena_allocator(perfc_ctx_arena(ctx));
  ProtobufCMessage *m =
      protobuf_c_message_unpack(resp->descriptor, &al, len, val);
  if (!m)
    return perfc_ctx_error(ctx, PERFC_STATUS_INTERNAL,
                           "cache: the cached value of %s does not decode as "
                           "%s",
                           key, resp->descriptor->name);
  /* The message and everything it points to live in the call's arena, as
   * a handler-filled response does; the copy into `resp` is shallow. */
  memcpy(resp, m, resp->descriptor->sizeof_message);
  return PERFC_STATUS_OK;
}

/* answer_hit() for a value malloc'd by the cache (consumed): copied into
 * the arena first, where the raw response must live. */
static perfc_status_code answer_hit_owned(perfc_ctx *ctx, const char *key,
                                          ProtobufCMessage *resp, uint8_t *val,
                                          size_t len) {
  uint8_t *copy = len ? perfc_arena_alloc(perfc_ctx_arena(ctx), len) : NULL;
  if (len && copy == NULL) {
    free(val);
    return perfc_ctx_error(ctx, PERFC_STATUS_RESOURCE_EXHAUSTED,
                           "out of memory");
  }
  if (len)
    memcpy(copy, val, len);
  free(val);
  return answer_hit(ctx, key, resp, copy, len, 0);
}

perfc_status_code
perfc_cache_rpc_unary(perfc_ctx *ctx, perfc_cache *cache, const char *key,
                      int64_t ttl_ms, int64_t negative_ttl_ms,
                      const ProtobufCMessage *req, ProtobufCMessage *resp,
                      perfc_cache_rpc_load_fn load, void *load_ud) {
  load_call lc = {ctx, req, resp, load, load_ud, 0, PERFC_STATUS_OK};
  uint8_t *val = NULL;
  size_t len = 0;
  int rc = perfc_cache_get_or_load_ttl(cache, key, ttl_ms, negative_ttl_ms,
                                       loader, &lc, &val, &len);
  if (lc.ran) {
    /* This call loaded: `resp` is what the handler filled (no unpack), and
     * its status and message are the handler's own. */
    free(val);
    if (rc == 0 || lc.status != PERFC_STATUS_OK)
      return lc.status;
    return perfc_ctx_error(ctx, PERFC_STATUS_INTERNAL,
                           "cache: storing the response failed: %s",
                           perfc_strerror(rc));
  }
  if (rc == PERFC_ENOENT) {
    /* From L1, Redis or a load shared with another call: each of them
     * left the entry, note included, in L1 (unless L1 is off). */
    uint8_t *note = NULL;
    size_t nlen = 0;
    if (perfc__cache_negative_note(cache, key, perfc_ctx_arena(ctx), &note,
                                   &nlen) != 0)
      note = NULL;
    return not_found(ctx, note, nlen);
  }
  if (rc <= STATUS_BASE && rc > STATUS_BASE - PERFC_STATUS_COUNT)
    return perfc_ctx_error(ctx, (perfc_status_code)(STATUS_BASE - rc),
                           "the load shared with a concurrent call failed");
  if (rc != 0) {
    /* Not a load failure and not Redis (absorbed by the cache): memory.
     * The cache is an optimisation, so the handler answers directly. */
    perfc_log(PERFC_LOG_WARN, "cache: %s: %s; loading without the cache", key,
              perfc_strerror(rc));
    return load(ctx, req, resp, load_ud);
  }
  return answer_hit_owned(ctx, key, resp, val, len);
}

/* A deferred call waiting for its Redis read on the loop. */
typedef struct l2_wait {
  perfc_deferred *d;
  const char *key; /* in the call's arena */
  ProtobufCMessage *resp;
} l2_wait;

/* On the loop, with the Redis read's outcome. */
static void l2_answered(int rc, const uint8_t *val, size_t len, void *ud) {
  l2_wait *w = ud;
  perfc_ctx *ctx = perfc_deferred_ctx(w->d);
  if (perfc_deferred_cancelled(w->d) == 1) {
    /* Answered by the transport already; this only releases the call. */
    perfc_deferred_finish(w->d, PERFC_STATUS_CANCELLED);
    return;
  }
  if (rc == 0) {
    /* `val` is borrowed for this callback: the raw response must live in
     * the arena until the call is sent. */
    uint8_t *copy = len ? perfc_arena_alloc(perfc_ctx_arena(ctx), len) : NULL;
    if (len && copy == NULL) {
      perfc_deferred_finish(w->d, perfc_ctx_error(ctx,
                                                  PERFC_STATUS_RESOURCE_EXHAUSTED,
                                                  "out of memory"));
      return;
    }
    if (len)
      memcpy(copy, val, len);
    perfc_deferred_finish(w->d, answer_hit(ctx, w->key, w->resp, copy, len, 0));
    return;
  }
  if (rc == PERFC_ENOENT) {
    perfc_deferred_finish(w->d, not_found(ctx, val, len));
    return;
  }
  /* A miss (or Redis failing): the method's trampoline runs on the pool
   * and takes the full path (lease, load, fill). */
  if (perfc_deferred_run_handler(w->d) != 0)
    perfc_deferred_finish(w->d, perfc_ctx_error(ctx, PERFC_STATUS_INTERNAL,
                                                "%s", perfc_last_error()));
}

int perfc_cache_rpc_try_hit_ttl(perfc_ctx *ctx, perfc_cache *cache,
                                const char *key, int64_t ttl_ms,
                                int64_t negative_ttl_ms, ProtobufCMessage *resp,
                                perfc_status_code *code) {
  if (cache == NULL || key == NULL || resp == NULL || code == NULL)
    return 0;
  uint8_t *val = NULL;
  size_t len = 0;
  /* Straight into the arena: no malloc, one copy under the shard lock. */
  int plain = 0;
  int rc = perfc__cache_peek_arena(cache, key, perfc_ctx_arena(ctx), &val, &len,
                                   &plain);
  if (rc == PERFC_ENOENT) {
    *code = not_found(ctx, val, len);
    return 1;
  }
  if (rc == 0) {
    *code = answer_hit(ctx, key, resp, val, len, plain);
    return 1;
  }
  if (rc != 1 || perfc_loop_current() == NULL ||
      !perfc__cache_l2_async_usable(cache))
    return 0; /* no memory, no loop, no async Redis: the pool's full path */
  /* Not in L1, on an event loop: read Redis here without a worker; a hit
   * is answered from the loop, a miss goes to the pool after all. */
  l2_wait *w = perfc_ctx_alloc(ctx, sizeof *w);
  if (w == NULL || (w->d = perfc_call_defer(ctx)) == NULL)
    return 0;
  w->key = key;
  w->resp = resp;
  if (perfc__cache_l2_get_async(cache, key, ttl_ms, negative_ttl_ms,
                                l2_answered, w) != 0)
    perfc_deferred_run_handler(w->d); /* at the return: the usual path */
  *code = PERFC_STATUS_OK; /* ignored: the call is deferred */
  return 1;
}

int perfc_cache_rpc_try_hit(perfc_ctx *ctx, perfc_cache *cache,
                            const char *key, ProtobufCMessage *resp,
                            perfc_status_code *code) {
  return perfc_cache_rpc_try_hit_ttl(ctx, cache, key, 0, 0, resp, code);
}

/* ---- the asynchronous load (perfc_cache_rpc_try_hit_async) ---- */

/* One call whose miss is loaded on its loop; in the call's arena. */
struct perfc_cache_rpc_load {
  perfc_deferred *d;
  perfc_ctx *ctx;
  perfc_cache *cache;
  const char *key;
  int64_t ttl_ms, negative_ttl_ms;
  const ProtobufCMessage *req;
  ProtobufCMessage *resp;
  perfc_cache_rpc_async_load_fn load;
  void *load_ud;
  perfc_cache_load *cl;     /* the cache's load, while this call leads it */
  int ran;                  /* this call's load ran (it leads the flight) */
  perfc_status_code status; /* the load's status when ran */
  int direct; /* 1: no cache, the load is the handler (run_direct); 2: done */
};

/* The load's gRPC status as the cache's int result. */
static int status_to_rc(perfc_status_code st) {
  return st == PERFC_STATUS_NOT_FOUND ? PERFC_ENOENT
                                      : STATUS_BASE - (int)st;
}

/* perfc_cache_async_loader_fn: the method's async load for the call that
 * leads the flight. */
static int async_loader(const char *key, perfc_cache_load *cl, void *ud) {
  perfc_cache_rpc_load *a = ud;
  (void)key;
  a->ran = 1;
  a->cl = cl;
  a->status = PERFC_STATUS_OK;
  perfc_status_code st = a->load(a->ctx, a->req, a->resp, a, a->load_ud);
  if (st == PERFC_STATUS_OK)
    return 0; /* started: perfc_cache_rpc_load_done() comes */
  a->status = st;
  return status_to_rc(st);
}

void perfc_cache_rpc_load_done(perfc_cache_rpc_load *a,
                               perfc_status_code code) {
  if (a != NULL && a->direct != 0) {
    if (a->direct == 2) {
      perfc_log(PERFC_LOG_ERROR, "perfc_cache_rpc_load_done: called twice "
                                 "for one call; ignored");
      return;
    }
    a->direct = 2;
    /* No cache: `resp` (filled by the load) and `code` are the answer. */
    perfc_deferred_finish(a->d, perfc_deferred_cancelled(a->d) == 1
                                    ? PERFC_STATUS_CANCELLED
                                    : code);
    return;
  }
  if (a == NULL || a->cl == NULL) {
    perfc_log(PERFC_LOG_ERROR, "perfc_cache_rpc_load_done: no load in "
                               "progress (called twice?); ignored");
    return;
  }
  perfc_cache_load *cl = a->cl;
  a->cl = NULL;
  a->status = code;
  if (code == PERFC_STATUS_NOT_FOUND) {
    uint8_t *note = NULL;
    size_t nlen = 0;
    note_of(a->ctx, &note, &nlen);
    perfc_cache_load_done(cl, PERFC_ENOENT, note, nlen);
    return;
  }
  if (code != PERFC_STATUS_OK) {
    perfc_cache_load_done(cl, status_to_rc(code), NULL, 0);
    return;
  }
  size_t n = protobuf_c_message_get_packed_size(a->resp);
  uint8_t *buf = malloc(n ? n : 1);
  if (buf == NULL) {
    perfc_cache_load_done(cl, PERFC_ENOMEM, NULL, 0);
    return;
  }
  n = protobuf_c_message_pack(a->resp, buf);
  perfc_cache_load_done(cl, 0, buf, n);
}

/* The cache's answer, on the call's loop: ends the call. */
static void async_result(int rc, const uint8_t *val, size_t len, void *ud) {
  perfc_cache_rpc_load *a = ud;
  perfc_ctx *ctx = a->ctx;
  if (perfc_deferred_cancelled(a->d) == 1) {
    perfc_deferred_finish(a->d, PERFC_STATUS_CANCELLED);
    return;
  }
  if (a->ran) {
    /* This call loaded: `resp` is what its load filled, and the status
     * and message are the load's own. */
    if (rc == 0 || a->status != PERFC_STATUS_OK) {
      perfc_deferred_finish(a->d, a->status);
      return;
    }
    perfc_deferred_finish(a->d, perfc_ctx_error(ctx, PERFC_STATUS_INTERNAL,
                                                "cache: storing the response "
                                                "failed: %s",
                                                perfc_strerror(rc)));
    return;
  }
  if (rc == PERFC_ENOENT) {
    /* The note came with the answer (a Redis read or this loop's load), or
     * another caller's load left it in L1. */
    uint8_t *note = (uint8_t *)val;
    size_t nlen = len;
    if (note == NULL &&
        perfc__cache_negative_note(a->cache, a->key, perfc_ctx_arena(ctx),
                                   &note, &nlen) != 0)
      note = NULL;
    perfc_deferred_finish(a->d, not_found(ctx, note, nlen));
    return;
  }
  if (rc <= STATUS_BASE && rc > STATUS_BASE - PERFC_STATUS_COUNT) {
    perfc_deferred_finish(
        a->d, perfc_ctx_error(ctx, (perfc_status_code)(STATUS_BASE - rc),
                              "the load shared with a concurrent call failed"));
    return;
  }
  if (rc != 0) {
    /* Memory: the blocking path on the pool, as perfc_cache_rpc_unary
     * loads without the cache. */
    if (perfc_deferred_run_handler(a->d) != 0)
      perfc_deferred_finish(a->d, perfc_ctx_error(ctx, PERFC_STATUS_INTERNAL,
                                                  "cache: %s",
                                                  perfc_strerror(rc)));
    return;
  }
  uint8_t *copy = len ? perfc_arena_alloc(perfc_ctx_arena(ctx), len) : NULL;
  if (len && copy == NULL) {
    perfc_deferred_finish(a->d,
                          perfc_ctx_error(ctx, PERFC_STATUS_RESOURCE_EXHAUSTED,
                                          "out of memory"));
    return;
  }
  if (len)
    memcpy(copy, val, len);
  perfc_deferred_finish(a->d, answer_hit(ctx, a->key, a->resp, copy, len, 0));
}

static void async_start_load(perfc_cache_rpc_load *a, int l2_missed) {
  if (perfc__cache_get_or_load_async(a->cache, a->key, a->ttl_ms,
                                     a->negative_ttl_ms, async_loader, a,
                                     async_result, a, l2_missed) != 0 &&
      perfc_deferred_run_handler(a->d) != 0)
    perfc_deferred_finish(a->d, perfc_ctx_error(a->ctx, PERFC_STATUS_INTERNAL,
                                                "%s", perfc_last_error()));
}

/* The plain GET's outcome: a hit or a cached "not found" answers; a miss
 * loads on the loop. */
static void async_l2_answered(int rc, const uint8_t *val, size_t len,
                              void *ud) {
  perfc_cache_rpc_load *a = ud;
  if (rc == 1 && perfc_deferred_cancelled(a->d) != 1) {
    async_start_load(a, 1);
    return;
  }
  async_result(rc == 1 ? 0 : rc, val, len, a); /* cancelled, or answered */
}

/* No cache (cache.enabled false): the method's async load is its whole
 * handler, run on the loop like a hit's miss path would run it, so the
 * read (a pg_async query) costs no worker hand-off either. Off a loop the
 * pool runs the blocking handler, as before. */
static int run_direct(perfc_ctx *ctx, const ProtobufCMessage *req,
                      ProtobufCMessage *resp, perfc_cache_rpc_async_load_fn load,
                      void *load_ud, perfc_status_code *code) {
  if (req == NULL || resp == NULL || code == NULL ||
      perfc_loop_current() == NULL)
    return 0;
  perfc_cache_rpc_load *a = perfc_ctx_alloc(ctx, sizeof *a);
  if (a == NULL)
    return 0;
  memset(a, 0, sizeof *a);
  if ((a->d = perfc_call_defer(ctx)) == NULL)
    return 0;
  a->ctx = ctx;
  a->req = req;
  a->resp = resp;
  a->load = load;
  a->load_ud = load_ud;
  a->ran = 1;
  a->direct = 1;
  perfc_status_code st = load(ctx, req, resp, a, load_ud);
  if (st != PERFC_STATUS_OK) {
    /* Failed before it started: no perfc_cache_rpc_load_done() comes. */
    a->direct = 2;
    perfc_deferred_finish(a->d, st);
  }
  *code = PERFC_STATUS_OK; /* ignored: the call is deferred */
  return 1;
}

int perfc_cache_rpc_try_hit_async(perfc_ctx *ctx, perfc_cache *cache,
                                  const char *key, int64_t ttl_ms,
                                  int64_t negative_ttl_ms,
                                  const ProtobufCMessage *req,
                                  ProtobufCMessage *resp,
                                  perfc_cache_rpc_async_load_fn load,
                                  void *load_ud, perfc_status_code *code) {
  if (load == NULL)
    return perfc_cache_rpc_try_hit_ttl(ctx, cache, key, ttl_ms,
                                       negative_ttl_ms, resp, code);
  if (cache == NULL)
    return run_direct(ctx, req, resp, load, load_ud, code);
  if (key == NULL || req == NULL || resp == NULL || code == NULL)
    return 0;
  uint8_t *val = NULL;
  size_t len = 0;
  int plain = 0;
  int rc = perfc__cache_peek_arena(cache, key, perfc_ctx_arena(ctx), &val, &len,
                                   &plain);
  if (rc == PERFC_ENOENT) {
    *code = not_found(ctx, val, len);
    return 1;
  }
  if (rc == 0) {
    *code = answer_hit(ctx, key, resp, val, len, plain);
    return 1;
  }
  /* Not on a loop (the C core transport, a worker), or Redis without its
   * asynchronous client: the pool's blocking path, as before. */
  if (rc != 1 || !perfc_cache_async_usable(cache))
    return 0;
  perfc_cache_rpc_load *a = perfc_ctx_alloc(ctx, sizeof *a);
  if (a == NULL || (a->d = perfc_call_defer(ctx)) == NULL)
    return 0;
  a->ctx = ctx;
  a->cache = cache;
  a->key = key;
  a->ttl_ms = ttl_ms;
  a->negative_ttl_ms = negative_ttl_ms;
  a->req = req;
  a->resp = resp;
  a->load = load;
  a->load_ud = load_ud;
  a->cl = NULL;
  a->ran = 0;
  a->status = PERFC_STATUS_OK;
  a->direct = 0;
  /* A plain GET first (no Lua on the hit path); the flight's lease read
   * follows only on a miss. */
  if (!perfc__cache_l2_async_usable(cache) ||
      perfc__cache_l2_get_async(cache, key, ttl_ms, negative_ttl_ms,
                                async_l2_answered, a) != 0)
    async_start_load(a, 0);
  *code = PERFC_STATUS_OK; /* ignored: the call is deferred */
  return 1;
}

void perfc_cache_rpc_invalidate(perfc_ctx *ctx, perfc_cache *cache,
                                const char *const *keys, size_t n) {
  int rc = perfc_cache_invalidate(cache, keys, n);
  if (rc != 0)
    perfc_log(PERFC_LOG_WARN,
              "cache: %s: invalidating %zu key(s) after the write failed: %s",
              perfc_ctx_method(ctx), n, perfc_strerror(rc));
}

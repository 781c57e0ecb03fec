/*
 * cache_rpc.c — the cache-aside wiring behind generated (perfc.cache) and
 * (perfc.invalidate) methods: perfc_cache around a unary handler.
 *
 * Room: runtime (data layer, generated-code contract). See
 * perfc/cache_rpc.h.
 */
#include "perfc/cache_rpc.h"

#include "cache_rpc_internal.h"
#include "perfc/arena.h"
#include "perfc/log.h"

#include <stdlib.h>
#include <string.h>

/* A load's gRPC status travels through perfc_cache's int error path (which
 * hands the same code to every call sharing the load) as a code below
 * every PERFC_E* value; the table never goes near it. */
#define STATUS_BASE (-0x10000)

typedef struct load_call {
  perfc_ctx *ctx;
  const ProtobufCMessage *req;
  ProtobufCMessage *resp;
  perfc_cache_rpc_load_fn load;
  void *load_ud;
  int ran;                  /* this call's thread ran the load */
  perfc_status_code status; /* the load's status when ran */
} load_call;

static int loader(const char *key, uint8_t **out, size_t *out_len,
                  void *user_data) {
  load_call *lc = user_data;
  (void)key;
  lc->ran = 1;
  lc->status = lc->load(lc->ctx, lc->req, lc->resp, lc->load_ud);
  if (lc->status == PERFC_STATUS_NOT_FOUND)
    return PERFC_ENOENT;
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

/* Reads the varint at *p (before end) and moves *p past it. */
static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
  uint64_t r = 0;
  for (unsigned shift = 0; shift < 64 && *p < end; shift += 7) {
    uint8_t b = *(*p)++;
    r |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *v = r;
      return 0;
    }
  }
  return -1;
}

/* Walks one top-level field at *p: its number and wire type, and where its
 * bytes (after the tag) begin and end. */
static int next_field(const uint8_t **p, const uint8_t *end, uint32_t *number,
                      int *wire, const uint8_t **body) {
  uint64_t tag, n;
  if (read_varint(p, end, &tag) != 0 || (tag >> 3) == 0 ||
      (tag >> 3) > 0x1fffffff)
    return -1;
  *number = (uint32_t)(tag >> 3);
  *wire = (int)(tag & 7);
  *body = *p;
  switch (*wire) {
  case PROTOBUF_C_WIRE_TYPE_VARINT:
    return read_varint(p, end, &n);
  case PROTOBUF_C_WIRE_TYPE_64BIT:
    if (end - *p < 8)
      return -1;
    *p += 8;
    return 0;
  case PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED:
    if (read_varint(p, end, &n) != 0 || n > (uint64_t)(end - *p))
      return -1;
    *p += n;
    return 0;
  case PROTOBUF_C_WIRE_TYPE_32BIT:
    if (end - *p < 4)
      return -1;
    *p += 4;
    return 0;
  default: /* groups (deprecated) and invalid types: let protobuf-c decode */
    return -1;
  }
}

int perfc__pb_pass_through(perfc_arena *a, ProtobufCMessage *msg,
                           const uint8_t *data, size_t len) {
  const uint8_t *p = data, *end = data + len, *body;
  uint32_t number;
  int wire;
  unsigned n = 0;
  /* Count and check first, so a malformed value leaves msg untouched. */
  while (p < end) {
    if (next_field(&p, end, &number, &wire, &body) != 0)
      return -1;
    n++;
  }
  if (n == 0)
    return 0;
  uint8_t *copy = perfc_arena_alloc(a, len);
  ProtobufCMessageUnknownField *f = perfc_arena_alloc(a, n * sizeof *f);
  if (copy == NULL || f == NULL)
    return PERFC_ENOMEM;
  memcpy(copy, data, len);
  p = copy;
  end = copy + len;
  for (unsigned i = 0; i < n; i++) {
    next_field(&p, end, &number, &wire, &body);
    f[i].tag = number;
    f[i].wire_type = (ProtobufCWireType)wire;
    f[i].len = (size_t)(p - body);
    f[i].data = (uint8_t *)body;
  }
  msg->n_unknown_fields = n;
  msg->unknown_fields = f;
  return 0;
}

/* Answers a hit from the cached bytes `val` (consumed). */
static perfc_status_code answer_hit(perfc_ctx *ctx, const char *key,
                                    ProtobufCMessage *resp, uint8_t *val,
                                    size_t len) {
  /* A hit is answered with the stored bytes as they are: decoding them into
   * C structs only for the server to encode them again is most of what a
   * hit costs (for examples/user-service's User, ~4,000 of ~5,000
   * instructions). The bytes are what this method's load packed, so
   * passing them through keeps the wire identical. */
  int prc = perfc__pb_pass_through(perfc_ctx_arena(ctx), resp, val, len);
  if (prc == 0) {
    free(val);
    return PERFC_STATUS_OK;
  }
  if (prc == PERFC_ENOMEM) {
    free(val);
    return perfc_ctx_error(ctx, PERFC_STATUS_RESOURCE_EXHAUSTED,
                           "out of memory");
  }
  /* Not plain fields (a group, or damaged bytes): protobuf-c decides. */
  ProtobufCAllocator al = perfc_arena_allocator(perfc_ctx_arena(ctx));
  ProtobufCMessage *m =
      protobuf_c_message_unpack(resp->descriptor, &al, len, val);
  free(val);
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

perfc_status_code
perfc_cache_rpc_unary(perfc_ctx *ctx, perfc_cache *cache, const char *key,
                      uint32_t ttl_ms, uint32_t negative_ttl_ms,
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
  if (rc == PERFC_ENOENT)
    return perfc_ctx_error(ctx, PERFC_STATUS_NOT_FOUND, "not found");
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
  return answer_hit(ctx, key, resp, val, len);
}

int perfc_cache_rpc_try_hit(perfc_ctx *ctx, perfc_cache *cache,
                            const char *key, ProtobufCMessage *resp,
                            perfc_status_code *code) {
  if (cache == NULL || key == NULL || resp == NULL || code == NULL)
    return 0;
  uint8_t *val = NULL;
  size_t len = 0;
  int rc = perfc_cache_peek(cache, key, &val, &len);
  if (rc == PERFC_ENOENT) {
    *code = perfc_ctx_error(ctx, PERFC_STATUS_NOT_FOUND, "not found");
    return 1;
  }
  if (rc != 0)
    return 0; /* not in L1 (or no memory): the full path on the pool */
  *code = answer_hit(ctx, key, resp, val, len);
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

/*
 * user_cache.c — the "users" cache and the batch read and create-time
 * invalidation that the generated wiring does not do.
 *
 * Room: examples/user-service. See user_cache.h: the key format and the
 * value below must stay what the generated GetUser wiring uses
 * ("user:{id}" and a packed user.v1.User), so that BatchGetUsers,
 * SyncUsers and GetUser answer from the same entries.
 */
#include "user_cache.h"
#include "user_store.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MAX 32

/* The generated code formats "user:%lld" from GetUserRequest.id; the same
 * text for every int64. */
static void user_key(char key[KEY_MAX], int64_t id) {
  snprintf(key, KEY_MAX, "user:%" PRId64, id);
}

static int key_id(const char *key, int64_t *id) {
  char *end = NULL;
  if (strncmp(key, "user:", 5) != 0)
    return PERFC_EINVAL;
  *id = strtoll(key + 5, &end, 10);
  return end != NULL && *end == '\0' ? 0 : PERFC_EINVAL;
}

static perfc_status_code err_to_status(int rc, char *msg, size_t msg_len) {
  switch (rc) {
  case 0:
    return PERFC_STATUS_OK;
  case PERFC_EIO:
  case PERFC_EUNAVAILABLE:
    snprintf(msg, msg_len, "database unavailable");
    return PERFC_STATUS_UNAVAILABLE;
  case PERFC_ETIMEDOUT:
    snprintf(msg, msg_len, "database timed out");
    return PERFC_STATUS_DEADLINE_EXCEEDED;
  case PERFC_EFULL:
    snprintf(msg, msg_len, "database connections exhausted");
    return PERFC_STATUS_RESOURCE_EXHAUSTED;
  case PERFC_ENOMEM:
    snprintf(msg, msg_len, "out of memory");
    return PERFC_STATUS_RESOURCE_EXHAUSTED;
  default:
    snprintf(msg, msg_len, "cannot read users: %s", perfc_strerror(rc));
    return PERFC_STATUS_INTERNAL;
  }
}

/* perfc_cache_batch_loader_fn: the keys' ids in one SELECT. */
static int load_many(const char *const *keys, size_t n, perfc_cache_value *out,
                     void *ud) {
  perfc_pg_pool *pg = ud;
  int64_t *ids = malloc(n * sizeof *ids);
  int rc = 0;
  if (ids == NULL)
    return PERFC_ENOMEM;
  for (size_t i = 0; i < n && rc == 0; i++)
    rc = key_id(keys[i], &ids[i]);
  if (rc == 0)
    rc = user_store_get_many_packed(pg, ids, n, out);
  free(ids);
  return rc;
}

int user_cache_new(perfc_cache **out, perfc_redis_pool *redis,
                   const perfc_config *cfg) {
  perfc_cache_opts o;
  perfc_cache_opts_init(&o);
  o.name = "users";
  o.redis = redis;
  o.l2_ttl_ms = USER_CACHE_TTL_MS;
  o.negative_ttl_ms = USER_CACHE_NEGATIVE_TTL_MS;
  /* main() calls perfc_cache_drain() with its shutdown budget before
   * freeing the cache, so the free itself only saves what is left. */
  o.drain_ms = 1;
  /* The cache: section (L1 size or none, TTLs, jitter, and the file where
   * Redis deletes still failing at shutdown wait for the next start) over
   * the defaults above. */
  int rc = cfg != NULL ? perfc_config_apply_cache(cfg, &o) : 0;
  return rc == 0 ? perfc_cache_new(out, &o) : rc;
}

static User__V1__User *unpack(perfc_arena *arena, const uint8_t *data,
                              size_t len) {
  ProtobufCAllocator a = perfc_arena_allocator(arena);
  return user__v1__user__unpack(&a, len, data);
}

perfc_status_code user_cache_get_many(perfc_cache *c, perfc_pg_pool *pg,
                                      const int64_t *ids, size_t n,
                                      perfc_arena *arena, User__V1__User **out,
                                      char *msg, size_t msg_len) {
  char *keybuf = malloc(n * KEY_MAX + 1);
  const char **keys = malloc((n + 1) * sizeof *keys);
  perfc_cache_value *vals = calloc(n + 1, sizeof *vals);
  int rc = 0;
  if (keybuf == NULL || keys == NULL || vals == NULL)
    rc = PERFC_ENOMEM;
  for (size_t i = 0; rc == 0 && i < n; i++) {
    user_key(keybuf + i * KEY_MAX, ids[i]);
    keys[i] = keybuf + i * KEY_MAX;
  }
  /* Without a cache the loader is the whole read (cache.enabled: false). */
  if (rc == 0 && n > 0)
    rc = c != NULL ? perfc_cache_get_many(c, keys, n, load_many, pg, vals)
                   : load_many(keys, n, vals, pg);
  for (size_t i = 0; rc == 0 && i < n; i++) {
    out[i] = NULL;
    if (vals[i].found) {
      out[i] = unpack(arena, vals[i].data, vals[i].len);
      if (out[i] == NULL)
        rc = PERFC_EPARSE;
    }
  }
  if (vals != NULL && n > 0)
    perfc_cache_values_free(vals, n);
  free(vals);
  free(keys);
  free(keybuf);
  return err_to_status(rc, msg, msg_len);
}

void user_cache_invalidate(perfc_cache *c, int64_t id) {
  char key[KEY_MAX];
  const char *keys[1] = {key};
  if (c == NULL)
    return;
  user_key(key, id);
  /* Redis failures are retried in the background by the cache; only a bad
   * argument or no memory fails here, and the negative TTL bounds either. */
  (void)perfc_cache_invalidate(c, keys, 1);
}

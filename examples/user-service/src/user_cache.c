/*
 * user_cache.c — GetUser/BatchGetUsers read through perfc_cache, Update and
 * Delete invalidate after their commit.
 *
 * Room: examples/user-service. Stands in for the declarative wiring that
 * protoc-gen-perfc will generate from (perfc.cache)/(perfc.invalidate); the
 * key format below must stay the option's "user:{id}".
 */
#include "user_cache.h"
#include "user_store.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct user_cache {
  perfc_cache *cache;
  perfc_pg_pool *pg;
};

/* GetUser's (perfc.cache) option: key "user:{id}", ttl 10m, negative 30s.
 * The cache: section's default_ttl/negative_ttl apply only to methods that
 * name none, as the generated wiring will do. */
#define USER_CACHE_TTL_MS 600000u
#define USER_CACHE_NEGATIVE_TTL_MS 30000u
#define KEY_MAX 32

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

/* The cache passes loader failures through as PERFC_E* codes and shares a
 * single flight's failure with every waiter, so the status has to survive
 * as an error code: UNAVAILABLE, DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED
 * keep their meaning, anything else becomes INTERNAL. */
static int status_to_err(perfc_status_code st) {
  switch (st) {
  case PERFC_STATUS_OK:
    return 0;
  case PERFC_STATUS_NOT_FOUND:
    return PERFC_ENOENT;
  case PERFC_STATUS_UNAVAILABLE:
    return PERFC_EIO;
  case PERFC_STATUS_DEADLINE_EXCEEDED:
    return PERFC_ETIMEDOUT;
  case PERFC_STATUS_RESOURCE_EXHAUSTED:
    return PERFC_EFULL;
  default:
    return PERFC_ESTATE;
  }
}

static perfc_status_code err_to_status(int rc, char *msg, size_t msg_len) {
  switch (rc) {
  case 0:
    return PERFC_STATUS_OK;
  case PERFC_ENOENT:
    snprintf(msg, msg_len, "user not found");
    return PERFC_STATUS_NOT_FOUND;
  case PERFC_EIO:
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
    snprintf(msg, msg_len, "cannot read user: %s", perfc_strerror(rc));
    return PERFC_STATUS_INTERNAL;
  }
}

static int load_one(const char *key, uint8_t **out, size_t *out_len, void *ud) {
  user_cache *c = ud;
  perfc_pg_error err;
  int64_t id;
  if (key_id(key, &id) != 0)
    return PERFC_EINVAL;
  return status_to_err(user_store_get_packed(c->pg, id, out, out_len, &err));
}

static int load_many(const char *const *keys, size_t n, perfc_cache_value *out,
                     void *ud) {
  user_cache *c = ud;
  perfc_pg_error err;
  int64_t *ids = malloc(n * sizeof *ids);
  int rc = 0;
  if (ids == NULL)
    return PERFC_ENOMEM;
  for (size_t i = 0; i < n && rc == 0; i++)
    rc = key_id(keys[i], &ids[i]);
  if (rc == 0)
    rc = status_to_err(user_store_get_many_packed(c->pg, ids, n, out, &err));
  free(ids);
  return rc;
}

int user_cache_new(user_cache **out, perfc_pg_pool *pg, perfc_redis_pool *redis,
                   const perfc_config_cache *cfg) {
  perfc_cache_opts o;
  user_cache *c = calloc(1, sizeof *c);
  int rc;
  *out = NULL;
  if (c == NULL)
    return PERFC_ENOMEM;
  perfc_cache_opts_init(&o);
  o.name = "users";
  o.redis = redis;
  o.l2_ttl_ms = USER_CACHE_TTL_MS;
  o.negative_ttl_ms = USER_CACHE_NEGATIVE_TTL_MS;
  if (cfg != NULL) {
    o.l1_max_bytes = (size_t)cfg->l1_max_bytes;
    /* jitter_percent 0 means "no jitter" in the file; the cache wants a
     * negative number for that (0 is its default). */
    o.ttl_jitter = cfg->jitter_percent ? cfg->jitter_percent / 100.0 : -1.0;
  }
  c->pg = pg;
  rc = perfc_cache_new(&c->cache, &o);
  if (rc != 0) {
    free(c);
    return rc;
  }
  *out = c;
  return 0;
}

void user_cache_free(user_cache *c) {
  if (c == NULL)
    return;
  perfc_cache_free(c->cache);
  free(c);
}

static User__V1__User *unpack(perfc_arena *arena, const uint8_t *data,
                              size_t len) {
  ProtobufCAllocator a = perfc_arena_allocator(arena);
  return user__v1__user__unpack(&a, len, data);
}

perfc_status_code user_cache_get(user_cache *c, int64_t id, perfc_arena *arena,
                                 User__V1__User **out, char *msg,
                                 size_t msg_len) {
  char key[KEY_MAX];
  uint8_t *data = NULL;
  size_t len = 0;
  int rc;
  *out = NULL;
  user_key(key, id);
  rc = perfc_cache_get_or_load(c->cache, key, load_one, c, &data, &len);
  if (rc == 0) {
    *out = unpack(arena, data, len);
    free(data);
    if (*out == NULL)
      rc = PERFC_EPARSE;
  }
  return err_to_status(rc, msg, msg_len);
}

perfc_status_code user_cache_get_many(user_cache *c, const int64_t *ids,
                                      size_t n, perfc_arena *arena,
                                      User__V1__User **out, char *msg,
                                      size_t msg_len) {
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
  if (rc == 0 && n > 0)
    rc = perfc_cache_get_many(c->cache, keys, n, load_many, c, vals);
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

void user_cache_invalidate(user_cache *c, int64_t id) {
  char key[KEY_MAX];
  const char *keys[1] = {key};
  user_key(key, id);
  /* Redis failures are retried in the background by the cache; only a bad
   * argument or no memory fails here, and the L2 TTL bounds either. */
  (void)perfc_cache_invalidate(c->cache, keys, 1);
}

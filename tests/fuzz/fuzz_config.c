/* fuzz_config.c — the configuration loader (runtime/src/config/load.c on
 * libcyaml/libyaml) fed arbitrary bytes as a YAML file, then, when it
 * loads, every value it parsed pushed back through perfc_config_set() as an
 * environment override would be, and the apply functions run. Whatever the
 * input, the loader must return 0 or PERFC_ECONFIG with a message, and
 * never crash or leak.
 *
 * Room: tests/fuzz. */
#include <perfc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  perfc_config *cfg = NULL;
  /* Successful calls leave the last error alone: start from none, so a
   * refusal below cannot pass on an earlier input's message. */
  perfc_error_set(0, NULL, -1, "%s", "");
  int rc = perfc_config_load_string(&cfg, (const char *)data, size, "fuzz.yaml");
  if (rc != 0) {
    /* A refusal always explains itself. */
    if (rc != PERFC_ECONFIG || perfc_last_error_detail().code != rc ||
        strncmp(perfc_last_error(), "config: ", 8) != 0)
      abort();
    return 0;
  }
  perfc_server_opts so;
  perfc_server_opts_init(&so);
  perfc_config_apply_server(cfg, &so);
  perfc_tls_opts to;
  perfc_tls_opts_init(&to);
  perfc_config_apply_tls(cfg, &to);
  perfc_redis_opts ro;
  perfc_redis_opts_init(&ro);
  perfc_config_apply_redis(cfg, &ro);
  perfc_pg_pool_opts po;
  perfc_pg_pool_opts_init(&po);
  (void)perfc_config_apply_pg(cfg, &po);
  perfc_cache_opts co;
  perfc_cache_opts_init(&co);
  (void)perfc_config_apply_cache(cfg, &co);
  for (size_t i = 0; i < perfc_config_listen_count(cfg); i++)
    if (perfc_config_listen_at(cfg, i) == NULL)
      abort();
  /* Overrides of list and scalar keys with bytes from the input. */
  char value[64];
  size_t n = size < sizeof value - 1 ? size : sizeof value - 1;
  memcpy(value, data, n);
  value[n] = '\0';
  static const char *const keys[] = {"server.threads", "server.listen",
                                     "resilience.method_timeouts",
                                     "resilience.method_rate_limits",
                                     "metrics.buckets", "cache.default_ttl"};
  for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
    (void)perfc_config_set(cfg, keys[i], value, "fuzz");
  perfc_config_free(cfg);
  return 0;
}

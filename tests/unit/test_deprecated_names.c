/* test_deprecated_names.c — the names docs taught before the API moved
 * inside each module's prefix still compile and mean the new ones
 * (perfc/metrics.h, jwt.h, timeouts.h, grpc_metrics.h, auth.h "Deprecated
 * aliases"). The rest of the tree builds with PERFC_NO_DEPRECATED_NAMES,
 * so this file alone uses them. */
#undef PERFC_NO_DEPRECATED_NAMES
#include <criterion/criterion.h>
#include <perfc.h>
#include <stdlib.h>
#include <string.h>

Test(deprecated_names, metrics_registry_and_family) {
  perfc_registry *reg;
  cr_assert_eq(perfc_registry_new(&reg), 0);
  cr_assert_eq((void *)perfc_registry_default(),
               (void *)perfc_metrics_registry_default());
  const char *labels[] = {"code"};
  perfc_metric_opts o;
  perfc_metric_opts_init(&o);
  o.name = "old_names_total";
  o.label_names = labels;
  o.label_count = 1;
  perfc_family *fam;
  perfc_metric_type t = PERFC_METRIC_COUNTER;
  cr_assert_eq(perfc_family_new(&fam, reg, t, &o), 0);
  perfc_counter *c;
  cr_assert_eq(perfc_counter_get(&c, fam, (const char *[]){"OK"}), 0);
  perfc_counter_add(c, 3);
  cr_assert_eq(PERFC_METRIC_GAUGE, PERFC_METRICS_GAUGE);
  cr_assert_eq(PERFC_METRIC_HISTOGRAM, PERFC_METRICS_HISTOGRAM);
  char *text;
  size_t len;
  cr_assert_eq(perfc_registry_render(reg, &text, &len), 0);
  cr_assert_not_null(strstr(text, "old_names_total{code=\"OK\"} 3\n"), "%s",
                     text);
  free(text);
  perfc_registry_free(reg);
}

Test(deprecated_names, guard_and_observe_aliases) {
  perfc_timeout_rule r = {.method = "/a.B/C", .timeout_ms = 5};
  perfc_timeouts_rule *same = &r; /* the same type */
  cr_assert_eq(same->timeout_ms, 5);
  cr_assert_eq(PERFC_AUTH_MAX_CLAIMS, PERFC_JWT_MAX_CLAIMS);
  cr_assert_eq(PERFC_AUTH_MAX_DEPTH, PERFC_JWT_MAX_DEPTH);
  cr_assert_eq(PERFC_DEFAULT_AUTH_LEEWAY_S * 1000,
               PERFC_DEFAULT_AUTH_LEEWAY_MS);
  perfc_auth_opts ao;
  perfc_auth_opts_init(&ao);
  ao.n_rules = 2;
  cr_assert_eq(ao.rule_count, 2, "n_rules is rule_count");
  /* The old attach name is the new function. */
  int (*attach)(perfc_grpc_metrics *, perfc_server *) =
      perfc_grpc_metrics_attach_server;
  cr_assert_eq((void *)attach, (void *)perfc_grpc_metrics_attach);
}

/* test_log.c — runtime/src/log.c: level filter, sink, logfmt escaping. */
#include <criterion/criterion.h>
#include <perfc/log.h>
#include <stdio.h>
#include <string.h>

static char last[2048];
static int calls;

static void sink(perfc_log_level level, const char *msg, void *ud) {
  (void)level;
  (void)ud;
  calls++;
  snprintf(last, sizeof last, "%s", msg);
}

Test(log, filters_by_level_and_escapes) {
  calls = 0;
  perfc_log_set_sink(sink, NULL);
  perfc_log_set_level(PERFC_LOG_WARN);
  perfc_log(PERFC_LOG_INFO, "dropped");
  cr_assert_eq(calls, 0);
  perfc_log(PERFC_LOG_ERROR, "say \"hi\"\nnext");
  cr_assert_eq(calls, 1);
  cr_assert(strstr(last, "level=error") != NULL, "%s", last);
  cr_assert(strstr(last, "msg=\"say \\\"hi\\\"\\nnext\"") != NULL, "%s", last);
  cr_assert(strncmp(last, "ts=", 3) == 0);
  perfc_log_set_sink(NULL, NULL);
  perfc_log_set_level(PERFC_LOG_INFO);
}

Test(log, parse_levels) {
  cr_assert_eq(perfc_log_level_parse("debug"), PERFC_LOG_DEBUG);
  cr_assert_eq(perfc_log_level_parse("WARN"), PERFC_LOG_WARN);
  cr_assert_eq(perfc_log_level_parse("warning"), PERFC_LOG_WARN);
  cr_assert_eq(perfc_log_level_parse("off"), PERFC_LOG_OFF);
  cr_assert_eq(perfc_log_level_parse("loud"), -1);
  cr_assert_eq(perfc_log_level_parse(NULL), -1);
}

/* test_log.c — runtime/src/core/log.c: level filter, sink, logfmt escaping. */
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

Test(log, json_lines_with_fields) {
  calls = 0;
  perfc_log_set_sink(sink, NULL);
  perfc_log_set_format(PERFC_LOG_JSON);
  perfc_log_field f[] = {{"method", "/a.B/C"}, {"note", "tab\there \"q\""}};
  perfc_log_fields(PERFC_LOG_ERROR, f, 2, "done %d", 7);
  cr_assert_eq(calls, 1);
  cr_assert(strncmp(last, "{\"ts\":\"", 7) == 0, "%s", last);
  cr_assert(strstr(last, "\"level\":\"error\",\"msg\":\"done 7\",\"method\":\"/a.B/C\","
                         "\"note\":\"tab\\there \\\"q\\\"\"}") != NULL,
            "%s", last);
  perfc_log_set_format(PERFC_LOG_LOGFMT);
  perfc_log_fields(PERFC_LOG_ERROR, f, 2, "done");
  cr_assert(strstr(last, "msg=\"done\" method=/a.B/C note=\"tab\\there \\\"q\\\"\"") != NULL,
            "%s", last);
  perfc_log_set_sink(NULL, NULL);
}

Test(log, parse_formats) {
  cr_assert_eq(perfc_log_format_parse("json"), PERFC_LOG_JSON);
  cr_assert_eq(perfc_log_format_parse("LOGFMT"), PERFC_LOG_LOGFMT);
  cr_assert_eq(perfc_log_format_parse("xml"), -1);
}

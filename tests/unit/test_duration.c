/*
 * test_duration.c — runtime/src/core/duration.c: the one duration rule the
 * configuration loader and protoc-gen-perfc share ("0", or <digits><unit>
 * groups with units ms, s, m, h; no sign, fraction, space or other unit).
 */
#include "core/duration_internal.h"

#include <criterion/criterion.h>
#include <stdint.h>

static int64_t parsed(const char *s) {
  int64_t ms = -7;
  cr_assert_eq(perfc__duration_parse_ms(s, &ms), 0, "\"%s\" refused", s);
  return ms;
}

Test(duration, units) {
  cr_expect_eq(parsed("250ms"), 250);
  cr_expect_eq(parsed("2s"), 2000);
  cr_expect_eq(parsed("10m"), 600000);
  cr_expect_eq(parsed("1h"), 3600000);
  cr_expect_eq(parsed("007s"), 7000);
}

/* "0" is a duration for both users now: the generator used to refuse it
 * while the configuration accepted it. */
Test(duration, zero) {
  cr_expect_eq(parsed("0"), 0);
  cr_expect_eq(parsed("0s"), 0);
  cr_expect_eq(parsed("0ms"), 0);
  cr_expect_eq(parsed("0h0m"), 0);
}

/* Groups add up in any order, as Go's time.ParseDuration reads them. */
Test(duration, groups_add_up) {
  cr_expect_eq(parsed("1m30s"), 90000);
  cr_expect_eq(parsed("1h2m3s4ms"), 3723004);
  cr_expect_eq(parsed("30s1m"), 90000);
  cr_expect_eq(parsed("1s1s"), 2000);
  cr_expect_eq(parsed("1m1ms"), 60001);
}

Test(duration, refused_and_left_unchanged) {
  static const char *bad[] = {
      "",      "2",    "00",   "10 s", " 1s",  "1s ",  "1.5s", "-1s", "+1s",
      "1d",    "1us",  "1ns",  "s",    "ms",   "10S",  "1H",   "1h-", "1m30",
      "1sec",  "1 m",  "0x1s", "1e3ms", "１s", "1s\n", "0.0s",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int64_t ms = 12345;
    cr_expect_eq(perfc__duration_parse_ms(bad[i], &ms), -1, "\"%s\" accepted",
                 bad[i]);
    cr_expect_eq(ms, 12345, "\"%s\" wrote the result on failure", bad[i]);
  }
  int64_t ms = 12345;
  cr_expect_eq(perfc__duration_parse_ms(NULL, &ms), -1);
  cr_expect_eq(ms, 12345);
}

/* Totals up to INT64_MAX milliseconds; one past, in a group or in the sum,
 * is refused rather than wrapped. */
Test(duration, overflow) {
  cr_expect_eq(parsed("9223372036854775807ms"), INT64_MAX);
  cr_expect_eq(parsed("2562047788015h"), 2562047788015LL * 3600000);
  int64_t ms = 1;
  cr_expect_eq(perfc__duration_parse_ms("9223372036854775808ms", &ms), -1);
  cr_expect_eq(perfc__duration_parse_ms("9223372036854775807ms1ms", &ms), -1);
  cr_expect_eq(perfc__duration_parse_ms("2562047788016h", &ms), -1);
  cr_expect_eq(perfc__duration_parse_ms("99999999999999999999h", &ms), -1);
  cr_expect_eq(ms, 1);
}

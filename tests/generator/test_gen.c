/*
 * test_gen.c — protoc-gen-perfc/gen.c: durations and plugin parameters,
 * driven through perfc__generate() with hand-built requests.
 *
 * Room: tests/generator. In-memory only (no stubs directory is given).
 */
#include "gen.h"

#include <criterion/criterion.h>
#include <stdlib.h>

Test(gen, durations) {
  int64_t ms = -1;
  cr_expect_eq(perfc__parse_duration_ms("250ms", &ms), 0);
  cr_expect_eq(ms, 250);
  cr_expect_eq(perfc__parse_duration_ms("2s", &ms), 0);
  cr_expect_eq(ms, 2000);
  cr_expect_eq(perfc__parse_duration_ms("10m", &ms), 0);
  cr_expect_eq(ms, 600000);
  cr_expect_eq(perfc__parse_duration_ms("1h", &ms), 0);
  cr_expect_eq(ms, 3600000);
  cr_expect_eq(perfc__parse_duration_ms("1m30s", &ms), 0);
  cr_expect_eq(ms, 90000);
  cr_expect_eq(perfc__parse_duration_ms("", &ms), 0);
  cr_expect_eq(ms, 0);
  cr_expect_eq(perfc__parse_duration_ms("2", &ms), -1);
  cr_expect_eq(perfc__parse_duration_ms("2 s", &ms), -1);
  cr_expect_eq(perfc__parse_duration_ms("s", &ms), -1);
  cr_expect_eq(perfc__parse_duration_ms("1.5s", &ms), -1);
  cr_expect_eq(perfc__parse_duration_ms("3d", &ms), -1);
  cr_expect_eq(perfc__parse_duration_ms("99999999999999999999h", &ms), -1);
  cr_expect_eq(perfc__parse_duration_ms("9223372036854775807ms", &ms), 0);
  cr_expect_eq(ms, INT64_MAX);
  cr_expect_eq(perfc__parse_duration_ms("9223372036854775807ms1ms", &ms), -1);
  cr_expect_eq(perfc__parse_duration_ms("2562047788015216h", &ms), -1);
}

static char *run_with_param(const char *param) {
  Google__Protobuf__Compiler__CodeGeneratorRequest req =
      GOOGLE__PROTOBUF__COMPILER__CODE_GENERATOR_REQUEST__INIT;
  Google__Protobuf__Compiler__CodeGeneratorResponse resp =
      GOOGLE__PROTOBUF__COMPILER__CODE_GENERATOR_RESPONSE__INIT;
  req.parameter = (char *)param;
  perfc__generate(&req, &resp);
  cr_expect(resp.has_supported_features);
  char *err = resp.error;
  resp.error = NULL;
  perfc__gen_response_clear(&resp);
  return err;
}

Test(gen, parameters) {
  char *err = run_with_param("");
  cr_expect_null(err);
  err = run_with_param("templates=/nonexistent-perfc-dir");
  cr_expect_str_eq(err, "protoc-gen-perfc: templates=/nonexistent-perfc-dir: "
                        "not a directory");
  free(err);
  err = run_with_param("stubs=/tmp,colour=blue");
  cr_expect_str_eq(err,
                   "protoc-gen-perfc: unknown parameter \"colour\"; known "
                   "parameters: templates=DIR (use the templates in DIR "
                   "instead of the built-in ones), stubs=DIR (write handler "
                   "scaffolding into DIR)");
  free(err);
  err = run_with_param("stubs=");
  cr_expect_str_eq(err, "protoc-gen-perfc: parameter \"stubs\" needs a "
                        "directory: stubs=DIR");
  free(err);
}

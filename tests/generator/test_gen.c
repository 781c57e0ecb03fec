/*
 * test_gen.c — protoc-gen-perfc/gen.c: plugin parameters, driven through
 * perfc__generate() with hand-built requests.
 *
 * Room: tests/generator. In-memory only (no stubs directory is given).
 * Durations (core/duration.c, shared with the configuration loader) are
 * tested in tests/unit/test_duration.c, the generator's use of them by the
 * golden protos/api/v1/user.proto ("0", "1m30s") and the error cases
 * errors/bad_timeout.proto and errors/bad_ttl.proto.
 */
#include "gen.h"

#include <criterion/criterion.h>
#include <stdlib.h>

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

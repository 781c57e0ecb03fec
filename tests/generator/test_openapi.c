/*
 * test_openapi.c — protoc-gen-perfc/openapi.c: the document's error
 * responses state the gRPC -> HTTP mapping; it must be the gateway's own
 * (perfc_http_status_from_grpc, runtime/src/gateway/status.c), code by
 * code, so a change on one side fails here. The documents themselves are
 * checked by generator.golden and openapi.validate.
 *
 * Room: tests/generator. Links perfc::gateway for the comparison.
 */
#include "openapi.h"

#include "perfc/gateway.h"

#include <criterion/criterion.h>

Test(openapi, status_table_is_the_gateways) {
  for (int code = 0; code <= 16; code++)
    cr_expect_eq(perfc__openapi_http_status(code),
                 perfc_http_status_from_grpc((perfc_status_code)code),
                 "gRPC code %d", code);
  cr_expect_eq(perfc__openapi_http_status(17), -1);
  cr_expect_eq(perfc__openapi_http_status(-1), -1);
  /* Spot values from google.rpc.Code's mapping, so the two tables cannot
   * drift together unnoticed. */
  cr_expect_eq(perfc__openapi_http_status(5), 404);
  cr_expect_eq(perfc__openapi_http_status(1), 499);
  cr_expect_eq(perfc__openapi_http_status(16), 401);
}

/*
 * openapi.h — the OpenAPI 3.0 document of a .proto file's HTTP routes
 * (parameter openapi=DIR; docs/http-json.md, "OpenAPI").
 *
 * Room: protoc-gen-perfc (the generator). A pure function over the
 * request's descriptors; gen.c writes what it returns.
 */
#ifndef PERFC_GEN_OPENAPI_H
#define PERFC_GEN_OPENAPI_H

#include "google/protobuf/compiler/plugin.pb-c.h"

/* Builds the OpenAPI 3.0.3 document (JSON, deterministic) of every
 * google.api.http route of the services of `f`. Returns 0 with a malloc'd
 * document in *out, or with *out NULL when no method of the file has a
 * route; -1 with a malloc'd message in *err when a route cannot be written
 * in OpenAPI (the routes themselves were checked by http.c already). */
int perfc__openapi_document(
    const Google__Protobuf__Compiler__CodeGeneratorRequest *req,
    const Google__Protobuf__FileDescriptorProto *f, char **out, char **err);

/* gRPC code -> HTTP status, as the gateway answers (perfc/gateway.h,
 * perfc_http_status_from_grpc); the document's error responses say it.
 * Exposed for the test that compares both tables. -1 for a code above 16. */
int perfc__openapi_http_status(int grpc_code);

#endif /* PERFC_GEN_OPENAPI_H */

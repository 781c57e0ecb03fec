/*
 * perfc/reflection.h — gRPC server reflection,
 * grpc.reflection.v1.ServerReflection and v1alpha, so that grpcurl, grpc_cli,
 * Postman and other tools can list a perfc server's services and fetch
 * their proto definitions without the .proto files.
 *
 * Answers come from the serialized FileDescriptorProtos protoc-gen-perfc
 * embeds in each service description (the defining file and everything it
 * imports, perfc_service_desc.files). They are parsed once, when the server
 * starts, into a sorted symbol table; a request only looks names up. See
 * docs/observability.md.
 *
 * Room: runtime public headers.
 */
#ifndef PERFC_REFLECTION_H
#define PERFC_REFLECTION_H

#include "perfc/common.h"
#include "perfc/server.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Serves grpc.reflection.v1.ServerReflection and
 * grpc.reflection.v1alpha.ServerReflection (the same service under its
 * older package; one implementation answers both) on `srv`, describing
 * every service added to `srv` — before or after this call — including the
 * reflection service itself and grpc.health.v1.Health when registered:
 * list_services, file_by_filename, file_containing_symbol (packages'
 * services, methods, messages, fields, enums, enum values, nested types,
 * extensions), file_containing_extension and all_extension_numbers_of_type.
 * File answers carry the file and every file it imports, transitively.
 * Unknown names get an error_response with NOT_FOUND.
 *
 * The tables are built at perfc_server_start() (a descriptor that does not
 * parse is logged and skipped) and freed by perfc_server_free(); nothing
 * to free here. Each open reflection stream runs on the server's worker
 * pool. Before perfc_server_start() only. Returns 0, PERFC_EINVAL,
 * PERFC_ENOMEM, or what perfc_server_add_service() returns (PERFC_EEXIST
 * when registered twice, or when either version is already on `srv`).
 */
PERFC_API int perfc_reflection_register(perfc_server *srv);

#ifdef __cplusplus
}
#endif
#endif /* PERFC_REFLECTION_H */

/*
 * test_gen.c — protoc-gen-perfc/gen.c: plugin parameters, driven through
 * perfc__generate() with hand-built requests.
 *
 * Room: tests/generator. In-memory only (no stubs directory is given).
 * Durations (core/duration.c, shared with the configuration loader) are
 * tested in tests/unit/test_duration.c, the generator's use of them by the
 * golden protos/api/v1/user.proto (DeleteUser: "0", ListUsers: "1m30s")
 * and the error cases errors/bad_timeout.proto and errors/bad_ttl.proto.
 */
#include "gen.h"

#include "core/builtin_files_internal.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

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
                   "scaffolding into DIR), openapi=DIR (write an OpenAPI 3.0 "
                   "document per file with google.api.http routes into DIR)");
  free(err);
  err = run_with_param("stubs=");
  cr_expect_str_eq(err, "protoc-gen-perfc: parameter \"stubs\" needs a "
                        "directory: stubs=DIR");
  free(err);
  err = run_with_param("openapi=");
  cr_expect_str_eq(err, "protoc-gen-perfc: parameter \"openapi\" needs a "
                        "directory: openapi=DIR");
  free(err);
}

/* ---- files the runtime carries ----------------------------------------- */

/* The generated .c for a.proto, which imports `dep` and uses its Empty in
 * one method; malloc'd. */
static char *generate_importing(Google__Protobuf__FileDescriptorProto *dep) {
  Google__Protobuf__MethodDescriptorProto m =
      GOOGLE__PROTOBUF__METHOD_DESCRIPTOR_PROTO__INIT;
  m.name = "Ping";
  m.input_type = ".google.protobuf.Empty";
  m.output_type = ".google.protobuf.Empty";
  Google__Protobuf__MethodDescriptorProto *mp = &m;
  Google__Protobuf__ServiceDescriptorProto s =
      GOOGLE__PROTOBUF__SERVICE_DESCRIPTOR_PROTO__INIT;
  s.name = "Svc";
  s.n_method = 1;
  s.method = &mp;
  Google__Protobuf__ServiceDescriptorProto *sp = &s;
  Google__Protobuf__FileDescriptorProto a =
      GOOGLE__PROTOBUF__FILE_DESCRIPTOR_PROTO__INIT;
  a.name = "a.proto";
  a.package = "a";
  a.syntax = "proto3";
  char *imports[] = {dep->name};
  a.n_dependency = 1;
  a.dependency = imports;
  a.n_service = 1;
  a.service = &sp;
  Google__Protobuf__FileDescriptorProto *files[] = {dep, &a};
  char *gen[] = {"a.proto"};
  Google__Protobuf__Compiler__CodeGeneratorRequest req =
      GOOGLE__PROTOBUF__COMPILER__CODE_GENERATOR_REQUEST__INIT;
  req.n_file_to_generate = 1;
  req.file_to_generate = gen;
  req.n_proto_file = 2;
  req.proto_file = files;
  Google__Protobuf__Compiler__CodeGeneratorResponse resp =
      GOOGLE__PROTOBUF__COMPILER__CODE_GENERATOR_RESPONSE__INIT;
  perfc__generate(&req, &resp);
  cr_assert_null(resp.error, "%s", resp.error);
  char *c = NULL;
  for (size_t i = 0; i < resp.n_file; i++)
    if (strcmp(resp.file[i]->name, "a.perfc.c") == 0)
      c = strdup(resp.file[i]->content);
  perfc__gen_response_clear(&resp);
  cr_assert_not_null(c);
  return c;
}

static Google__Protobuf__FileDescriptorProto *runtime_copy(const char *name) {
  for (size_t i = 0; i < perfc__n_builtin_files; i++)
    if (strcmp(perfc__builtin_files[i].name, name) == 0)
      return google__protobuf__file_descriptor_proto__unpack(
          NULL, perfc__builtin_files[i].len, perfc__builtin_files[i].data);
  cr_assert_fail("the runtime does not carry %s", name);
  return NULL;
}

/* An import with the very bytes libperfc carries is named, not embedded. */
Test(gen, import_the_runtime_carries_is_named) {
  Google__Protobuf__FileDescriptorProto *dep =
      runtime_copy("google/protobuf/empty.proto");
  char *c = generate_importing(dep);
  cr_expect_not_null(
      strstr(c, "  {\"google/protobuf/empty.proto\", NULL, 0},\n"), "%s", c);
  cr_expect_null(strstr(c, "a__perfc_file_descriptor_dep1["), "%s", c);
  free(c);
  google__protobuf__file_descriptor_proto__free_unpacked(dep, NULL);
}

/* The same name with other contents (another protobuf version, say) is
 * embedded: reflection must serve what the code was generated from. */
Test(gen, import_of_that_name_with_other_bytes_is_embedded) {
  Google__Protobuf__FileDescriptorProto *dep =
      runtime_copy("google/protobuf/empty.proto");
  Google__Protobuf__FileOptions *opts = dep->options;
  cr_assert_not_null(opts, "empty.proto sets file options (java_package)");
  dep->options = NULL;
  char *c = generate_importing(dep);
  cr_expect_not_null(
      strstr(c, "static const uint8_t a__perfc_file_descriptor_dep1["), "%s",
      c);
  cr_expect_not_null(strstr(c, "  {\"google/protobuf/empty.proto\", "
                               "a__perfc_file_descriptor_dep1, "
                               "sizeof a__perfc_file_descriptor_dep1},\n"),
                     "%s", c);
  cr_expect_null(strstr(c, "NULL, 0}"), "%s", c);
  free(c);
  dep->options = opts;
  google__protobuf__file_descriptor_proto__free_unpacked(dep, NULL);
}

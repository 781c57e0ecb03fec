/* test_reflection.c — runtime/src/observe/reflection.c: a real server on
 * 127.0.0.1:0 with TestService (which imports perfc/options.proto and so
 * descriptor.proto), health and reflection, asked over one
 * ServerReflectionInfo stream by a C-core client. */
#include <criterion/criterion.h>
#include "test_transport.h" /* test_server_new: both transports */
#include <perfc/health.h>
#include <perfc/reflection.h>
#include <perfc/server.h>

#include "google/protobuf/descriptor.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"
#include "stream_client.h"
#include "test_service.h"

#define INFO_PATH                                                              \
  "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"

typedef Grpc__Reflection__V1alpha__ServerReflectionRequest Req;
typedef Grpc__Reflection__V1alpha__ServerReflectionResponse Resp;

static perfc_server *srv;
static perfc_health *health;
static grpc_channel *ch;
static sc_call call;

static void setup(void) {
  cr_assert_eq(perfc_health_new(&health, NULL), 0);
  perfc_server_opts o = {.threads = 2};
  int port;
  cr_assert_eq(test_server_new(&srv, &o), 0);
  cr_assert_eq(perfc_server_listen(srv, "127.0.0.1:0", &port), 0);
  /* Reflection first: it must still describe what is added after it. */
  cr_assert_eq(perfc_reflection_register(srv), 0);
  cr_assert_eq(perfc_reflection_register(srv), PERFC_EEXIST);
  cr_assert_eq(perfc__test__v1__test_service__perfc_register(
                   srv, &test_service_handlers, NULL),
               0);
  cr_assert_eq(perfc_health_register(health, srv), 0);
  cr_assert_eq(perfc_server_start(srv), 0);
  cr_assert_eq(perfc_reflection_register(srv), PERFC_EEXIST);
  grpc_init();
  ch = sc_channel(port);
  cr_assert_eq(sc_open(&call, ch, INFO_PATH, 30000), 0);
}

static void teardown(void) {
  sc_close_send(&call);
  ProtobufCMessage *m;
  cr_expect_eq(
      sc_recv(
          &call,
          &grpc__reflection__v1alpha__server_reflection_response__descriptor,
          &m),
      0);
  cr_expect_eq(sc_finish(&call, NULL, 0), GRPC_STATUS_OK);
  sc_free(&call);
  grpc_channel_destroy(ch);
  perfc_server_free(srv);
  perfc_health_free(health);
  grpc_shutdown();
}

static Resp *ask(Req *req) {
  req->host = "localhost";
  cr_assert_eq(sc_send(&call, &req->base, 0), 0);
  ProtobufCMessage *m = NULL;
  cr_assert_eq(
      sc_recv(
          &call,
          &grpc__reflection__v1alpha__server_reflection_response__descriptor,
          &m),
      1);
  Resp *resp = (Resp *)m;
  cr_assert_str_eq(resp->valid_host, "localhost");
  cr_assert_not_null(resp->original_request);
  cr_assert_eq(resp->original_request->message_request_case,
               req->message_request_case);
  return resp;
}

static Resp *ask_symbol(const char *symbol) {
  Req req = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__INIT;
  req.message_request_case =
      GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL;
  req.file_containing_symbol = (char *)symbol;
  return ask(&req);
}

static void free_resp(Resp *r) {
  protobuf_c_message_free_unpacked(&r->base, NULL);
}

/* The files of a file answer, parsed; the caller frees each. */
static size_t parse_files(const Resp *r,
                          Google__Protobuf__FileDescriptorProto **out,
                          size_t max) {
  cr_assert_eq(
      r->message_response_case,
      GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE,
      "not a file answer (case %d)", r->message_response_case);
  size_t n = r->file_descriptor_response->n_file_descriptor_proto;
  cr_assert_leq(n, max);
  for (size_t i = 0; i < n; i++) {
    ProtobufCBinaryData b =
        r->file_descriptor_response->file_descriptor_proto[i];
    out[i] =
        google__protobuf__file_descriptor_proto__unpack(NULL, b.len, b.data);
    cr_assert_not_null(out[i], "file %zu does not parse", i);
  }
  return n;
}

static void free_files(Google__Protobuf__FileDescriptorProto **f, size_t n) {
  for (size_t i = 0; i < n; i++)
    google__protobuf__file_descriptor_proto__free_unpacked(f[i], NULL);
}

/* Asks for `symbol` and checks the answer starts with `file` and holds
 * every file that any file of the answer imports, each once. */
static void expect_symbol_in(const char *symbol, const char *file,
                             size_t min_files) {
  Resp *r = ask_symbol(symbol);
  Google__Protobuf__FileDescriptorProto *f[32];
  size_t n = parse_files(r, f, 32);
  cr_assert_geq(n, min_files, "%s: %zu files", symbol, n);
  cr_assert_str_eq(f[0]->name, file, "%s", symbol);
  for (size_t i = 0; i < n; i++) {
    for (size_t j = 0; j < i; j++)
      cr_assert_str_neq(f[i]->name, f[j]->name, "%s twice", f[i]->name);
    for (size_t d = 0; d < f[i]->n_dependency; d++) {
      int found = 0;
      for (size_t k = 0; k < n; k++)
        found |= strcmp(f[k]->name, f[i]->dependency[d]) == 0;
      cr_assert(found, "%s imports %s, missing from the answer", f[i]->name,
                f[i]->dependency[d]);
    }
  }
  free_files(f, n);
  free_resp(r);
}

static void expect_error(Resp *r, int code, const char *text) {
  cr_assert_eq(
      r->message_response_case,
      GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE);
  cr_assert_eq(r->error_response->error_code, code);
  cr_assert(strstr(r->error_response->error_message, text) != NULL, "%s",
            r->error_response->error_message);
  free_resp(r);
}

TestSuite(reflection, .init = setup, .fini = teardown, .timeout = 60);

Test(reflection, list_services_covers_services_added_later) {
  Req req = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__INIT;
  req.message_request_case =
      GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES;
  req.list_services = "";
  Resp *r = ask(&req);
  cr_assert_eq(
      r->message_response_case,
      GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE);
  const Grpc__Reflection__V1alpha__ListServiceResponse *l =
      r->list_services_response;
  cr_assert_eq(l->n_service, 4);
  cr_assert_str_eq(l->service[0]->name,
                   "grpc.reflection.v1alpha.ServerReflection");
  cr_assert_str_eq(l->service[1]->name, "grpc.reflection.v1.ServerReflection");
  cr_assert_str_eq(l->service[2]->name, "perfc.test.v1.TestService");
  cr_assert_str_eq(l->service[3]->name, "grpc.health.v1.Health");
  free_resp(r);
}

/* grpc.reflection.v1, asked with a client's own v1 messages on a second
 * stream: the same answers as v1alpha, and it describes itself from the v1
 * file. */
Test(reflection, v1_is_served_too) {
  sc_call v1;
  cr_assert_eq(sc_open(&v1, ch,
                       "/grpc.reflection.v1.ServerReflection/"
                       "ServerReflectionInfo",
                       30000),
               0);
  Grpc__Reflection__V1__ServerReflectionRequest req =
      GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
  req.host = "h1";
  req.message_request_case =
      GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES;
  req.list_services = "";
  const ProtobufCMessageDescriptor *rd =
      &grpc__reflection__v1__server_reflection_response__descriptor;
  ProtobufCMessage *m = NULL;
  cr_assert_eq(sc_send(&v1, &req.base, 0), 0);
  cr_assert_eq(sc_recv(&v1, rd, &m), 1);
  Grpc__Reflection__V1__ServerReflectionResponse *r = (void *)m;
  cr_assert_str_eq(r->valid_host, "h1");
  cr_assert_eq(
      r->message_response_case,
      GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE);
  cr_assert_eq(r->list_services_response->n_service, 4);
  cr_assert_str_eq(r->list_services_response->service[1]->name,
                   "grpc.reflection.v1.ServerReflection");
  protobuf_c_message_free_unpacked(m, NULL);

  req.message_request_case =
      GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL;
  req.file_containing_symbol = "grpc.reflection.v1.ServerReflection";
  cr_assert_eq(sc_send(&v1, &req.base, 0), 0);
  cr_assert_eq(sc_recv(&v1, rd, &m), 1);
  r = (void *)m;
  cr_assert_eq(
      r->message_response_case,
      GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE);
  cr_assert_eq(r->file_descriptor_response->n_file_descriptor_proto, 1);
  ProtobufCBinaryData b = r->file_descriptor_response->file_descriptor_proto[0];
  Google__Protobuf__FileDescriptorProto *f =
      google__protobuf__file_descriptor_proto__unpack(NULL, b.len, b.data);
  cr_assert_not_null(f);
  cr_assert_str_eq(f->name, "grpc/reflection/v1/reflection.proto");
  cr_assert_str_eq(f->package, "grpc.reflection.v1");
  google__protobuf__file_descriptor_proto__free_unpacked(f, NULL);
  protobuf_c_message_free_unpacked(m, NULL);

  req.file_containing_symbol = "perfc.test.v1.Nope";
  cr_assert_eq(sc_send(&v1, &req.base, 0), 0);
  cr_assert_eq(sc_recv(&v1, rd, &m), 1);
  r = (void *)m;
  cr_assert_eq(
      r->message_response_case,
      GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE);
  cr_assert_eq(r->error_response->error_code, 5);
  protobuf_c_message_free_unpacked(m, NULL);

  sc_close_send(&v1);
  cr_assert_eq(sc_recv(&v1, rd, &m), 0);
  cr_assert_eq(sc_finish(&v1, NULL, 0), GRPC_STATUS_OK);
  sc_free(&v1);
}

Test(reflection, file_containing_symbol_with_dependencies) {
  /* test.proto imports perfc/options.proto, which imports descriptor.proto. */
  expect_symbol_in("perfc.test.v1.EchoRequest", "perfc/test/v1/test.proto", 3);
  expect_symbol_in("perfc.test.v1.TestService", "perfc/test/v1/test.proto", 3);
  expect_symbol_in("perfc.test.v1.TestService.Chat", "perfc/test/v1/test.proto",
                   3);
  expect_symbol_in("perfc.test.v1.EchoRequest.sleep_ms",
                   "perfc/test/v1/test.proto", 3);
  /* Symbols of imported files are found too. */
  expect_symbol_in("perfc.MethodOptions", "perfc/options.proto", 2);
  expect_symbol_in("google.protobuf.FileDescriptorProto",
                   "google/protobuf/descriptor.proto", 1);
  /* Nested types, enums and (C++-scoped) enum values. */
  expect_symbol_in("grpc.health.v1.HealthCheckResponse.ServingStatus",
                   "grpc/health/v1/health.proto", 1);
  expect_symbol_in("grpc.health.v1.HealthCheckResponse.SERVING",
                   "grpc/health/v1/health.proto", 1);
  expect_symbol_in("google.protobuf.FieldDescriptorProto.Type",
                   "google/protobuf/descriptor.proto", 1);
  expect_symbol_in(
      "grpc.reflection.v1alpha.ServerReflection.ServerReflectionInfo",
      "grpc/reflection/v1alpha/reflection.proto", 1);

  /* The first file of the answer defines the symbol. */
  Resp *r = ask_symbol("perfc.test.v1.WrongWire");
  Google__Protobuf__FileDescriptorProto *f[32];
  size_t n = parse_files(r, f, 32);
  int found = 0;
  for (size_t i = 0; i < f[0]->n_message_type; i++)
    found |= strcmp(f[0]->message_type[i]->name, "WrongWire") == 0;
  cr_assert(found);
  cr_assert_str_eq(f[0]->package, "perfc.test.v1");
  free_files(f, n);
  free_resp(r);
}

Test(reflection, unknown_names_not_found_and_stream_goes_on) {
  expect_error(ask_symbol("perfc.test.v1.Nope"), 5, "perfc.test.v1.Nope");
  expect_error(ask_symbol(""), 5, "symbol");
  expect_error(ask_symbol("perfc.test"), 5, "perfc.test");

  Req req = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__INIT;
  req.message_request_case =
      GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME;
  req.file_by_filename = "nope.proto";
  expect_error(ask(&req), 5, "nope.proto");

  req.file_by_filename = "grpc/health/v1/health.proto";
  Resp *r = ask(&req);
  Google__Protobuf__FileDescriptorProto *f[4];
  size_t n = parse_files(r, f, 4);
  cr_assert_eq(n, 1, "health.proto imports nothing");
  cr_assert_str_eq(f[0]->name, "grpc/health/v1/health.proto");
  cr_assert_eq(f[0]->n_service, 1);
  cr_assert_str_eq(f[0]->service[0]->name, "Health");
  free_files(f, n);
  free_resp(r);

  Req empty = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__INIT;
  expect_error(ask(&empty), 12, "request kind");
  /* Still answering after errors. */
  expect_symbol_in("perfc.test.v1.EchoResponse", "perfc/test/v1/test.proto", 3);
}

Test(reflection, extensions) {
  /* perfc/options.proto extends google.protobuf.MethodOptions with 51001..3. */
  Grpc__Reflection__V1alpha__ExtensionRequest e =
      GRPC__REFLECTION__V1ALPHA__EXTENSION_REQUEST__INIT;
  e.containing_type = "google.protobuf.MethodOptions";
  e.extension_number = 51002;
  Req req = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__INIT;
  req.message_request_case =
      GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION;
  req.file_containing_extension = &e;
  Resp *r = ask(&req);
  Google__Protobuf__FileDescriptorProto *f[8];
  size_t n = parse_files(r, f, 8);
  cr_assert_eq(n, 2);
  cr_assert_str_eq(f[0]->name, "perfc/options.proto");
  cr_assert_str_eq(f[1]->name, "google/protobuf/descriptor.proto");
  free_files(f, n);
  free_resp(r);

  e.extension_number = 7;
  expect_error(ask(&req), 5, "google.protobuf.MethodOptions");

  Req all = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__INIT;
  all.message_request_case =
      GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE;
  all.all_extension_numbers_of_type = "google.protobuf.MethodOptions";
  r = ask(&all);
  cr_assert_eq(
      r->message_response_case,
      GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE);
  const Grpc__Reflection__V1alpha__ExtensionNumberResponse *x =
      r->all_extension_numbers_response;
  cr_assert_str_eq(x->base_type_name, "google.protobuf.MethodOptions");
  cr_assert_eq(x->n_extension_number, 3);
  cr_assert_eq(x->extension_number[0], 51001);
  cr_assert_eq(x->extension_number[2], 51003);
  free_resp(r);

  /* A known message nobody extends: an empty list, not an error. */
  all.all_extension_numbers_of_type = "perfc.test.v1.EchoRequest";
  r = ask(&all);
  cr_assert_eq(r->all_extension_numbers_response->n_extension_number, 0);
  free_resp(r);
  all.all_extension_numbers_of_type = "perfc.test.v1.TestService";
  expect_error(ask(&all), 5, "message type");
}

/* The runtime carries perfc/options.proto and descriptor.proto once: the
 * generated table of test.proto names them without bytes (it used to embed
 * 8.3 KB for them), and reflection still answers for them, by file name,
 * with the runtime's bytes exactly. */
static size_t file_entry(const perfc_service_desc *d, const char *name) {
  for (size_t i = 0; i < d->n_files; i++)
    if (strcmp(d->files[i].name, name) == 0)
      return i;
  cr_assert_fail("%s is not in %s's files", name, d->name);
  return 0;
}

static void expect_file_is_builtin(const char *name, size_t n_files) {
  const perfc_service_desc *d = &perfc__test__v1__test_service__perfc_desc;
  const perfc_file_desc *e = &d->files[file_entry(d, name)];
  cr_assert_null(e->data, "%s embedded in the generated table", name);
  cr_assert_eq(e->len, 0);
  const perfc_file_desc *own = perfc_file_desc_builtin(name);
  cr_assert_not_null(own, "the runtime does not carry %s", name);
  cr_assert_str_eq(own->name, name);

  Req req = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__INIT;
  req.message_request_case =
      GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME;
  req.file_by_filename = (char *)name;
  Resp *r = ask(&req);
  Google__Protobuf__FileDescriptorProto *f[4];
  size_t n = parse_files(r, f, 4);
  cr_assert_eq(n, n_files, "%s: %zu files", name, n);
  cr_assert_str_eq(f[0]->name, name);
  ProtobufCBinaryData b = r->file_descriptor_response->file_descriptor_proto[0];
  cr_assert_eq(b.len, own->len);
  cr_assert_eq(memcmp(b.data, own->data, own->len), 0);
  free_files(f, n);
  free_resp(r);
}

Test(reflection, imports_the_runtime_carries_are_served_from_its_copy) {
  expect_file_is_builtin("perfc/options.proto", 2);
  expect_file_is_builtin("google/protobuf/descriptor.proto", 1);
  /* The defining file is still the generated file's own bytes. */
  const perfc_service_desc *d = &perfc__test__v1__test_service__perfc_desc;
  cr_assert_str_eq(d->files[0].name, "perfc/test/v1/test.proto");
  cr_assert_not_null(d->files[0].data);
  cr_assert_eq(d->files[0].len, d->file_descriptor_len);
}

Test(reflection_builtin, lookup) {
  static const char *carried[] = {
      "perfc/options.proto",
      "google/protobuf/any.proto",
      "google/protobuf/api.proto",
      "google/protobuf/duration.proto",
      "google/protobuf/empty.proto",
      "google/protobuf/field_mask.proto",
      "google/protobuf/source_context.proto",
      "google/protobuf/struct.proto",
      "google/protobuf/timestamp.proto",
      "google/protobuf/type.proto",
      "google/protobuf/wrappers.proto",
      "google/protobuf/descriptor.proto",
  };
  for (size_t i = 0; i < sizeof carried / sizeof *carried; i++) {
    const perfc_file_desc *f = perfc_file_desc_builtin(carried[i]);
    cr_assert_not_null(f, "%s", carried[i]);
    Google__Protobuf__FileDescriptorProto *p =
        google__protobuf__file_descriptor_proto__unpack(NULL, f->len, f->data);
    cr_assert_not_null(p, "%s does not parse", carried[i]);
    cr_assert_str_eq(p->name, carried[i]);
    cr_assert_null(p->source_code_info, "%s carries source info", carried[i]);
    google__protobuf__file_descriptor_proto__free_unpacked(p, NULL);
  }
  cr_assert_null(
      perfc_file_desc_builtin("google/protobuf/compiler/plugin.proto"));
  cr_assert_null(perfc_file_desc_builtin("perfc/test/v1/test.proto"));
  cr_assert_null(perfc_file_desc_builtin(""));
  cr_assert_null(perfc_file_desc_builtin(NULL));
}

/* A table naming a file without bytes that this runtime does not carry
 * (code generated for a newer runtime, or a hand-made table) loses only
 * that file: the server starts and reflection answers for the rest. */
Test(reflection_builtin, unknown_file_without_bytes_is_left_out) {
  const perfc_service_desc *t = &perfc__test__v1__test_service__perfc_desc;
  perfc_file_desc files[2] = {t->files[0], {"nope/unknown.proto", NULL, 0}};
  perfc_service_desc d = *t;
  d.name = "perfc.test.v1.TestServiceCopy";
  d.files = files;
  d.n_files = 2;
  perfc_server *s;
  perfc_server_opts o = {.threads = 1};
  int port;
  cr_assert_eq(test_server_new(&s, &o), 0);
  cr_assert_eq(perfc_server_listen(s, "127.0.0.1:0", &port), 0);
  cr_assert_eq(perfc_reflection_register(s), 0);
  cr_assert_eq(perfc_server_add_service(s, &d, &test_service_handlers, NULL),
               0);
  cr_assert_eq(perfc_server_start(s), 0);
  grpc_init();
  grpc_channel *c = sc_channel(port);
  sc_call rc;
  cr_assert_eq(sc_open(&rc, c, INFO_PATH, 30000), 0);
  const char *names[] = {"nope/unknown.proto", "perfc/test/v1/test.proto"};
  for (size_t i = 0; i < 2; i++) {
    Req req = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__INIT;
    req.message_request_case =
        GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME;
    req.file_by_filename = (char *)names[i];
    cr_assert_eq(sc_send(&rc, &req.base, 0), 0);
    ProtobufCMessage *m = NULL;
    cr_assert_eq(
        sc_recv(
            &rc,
            &grpc__reflection__v1alpha__server_reflection_response__descriptor,
            &m),
        1);
    Resp *r = (Resp *)m;
    if (i == 0) {
      cr_assert_eq(
          r->message_response_case,
          GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE);
      cr_assert_eq(r->error_response->error_code, 5);
    } else {
      cr_assert_eq(
          r->message_response_case,
          GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE);
      /* test.proto alone: its imports are not in this table. */
      cr_assert_eq(r->file_descriptor_response->n_file_descriptor_proto, 1);
    }
    free_resp(r);
  }
  sc_close_send(&rc);
  ProtobufCMessage *m;
  cr_expect_eq(
      sc_recv(&rc,
              &grpc__reflection__v1alpha__server_reflection_response__descriptor,
              &m),
      0);
  cr_expect_eq(sc_finish(&rc, NULL, 0), GRPC_STATUS_OK);
  sc_free(&rc);
  grpc_channel_destroy(c);
  perfc_server_free(s);
  grpc_shutdown();
}

/*
 * reflection.c — grpc.reflection.v1.ServerReflection and its predecessor
 * v1alpha (still what many clients ask first) from the file descriptors
 * protoc-gen-perfc embeds in each service description.
 *
 * Room: runtime/src/observe. Serves the services generated from
 * proto/grpc/reflection/{v1,v1alpha}/reflection.proto (private to the
 * runtime), both with the one implementation below;
 * parses descriptors with protobuf-c's descriptor.proto code from perfc_wkt;
 * depends on the server only through its public API and hooks.
 *
 * All parsing happens once, in a start hook, so that services added after
 * perfc_reflection_register() are described too: every embedded file is
 * unpacked, walked for the symbols it defines and the extensions it
 * declares, and released; what stays is a sorted symbol table pointing at
 * file indices, each file's resolved imports, and the prebuilt
 * list_services answer. A request then costs a binary search and a walk
 * over the import graph; answers point at the embedded bytes, never copy.
 */
#include "perfc/reflection.h"
#include "core/error_internal.h"
#include "perfc/arena.h"
#include "perfc/log.h"
#include "perfc/stream.h"

#include "google/protobuf/descriptor.pb-c.h"
#include "grpc/reflection/v1/reflection.perfc.h"
#include "grpc/reflection/v1alpha/reflection.perfc.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* protoc-c's names for the oneof cases, shortened. */
#define REQ_CASE(x)                                                            \
  GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_##x
#define RESP_CASE(x)                                                           \
  GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_##x

typedef Grpc__Reflection__V1alpha__ServerReflectionRequest reflection_req;
typedef Grpc__Reflection__V1alpha__ServerReflectionResponse reflection_resp;
typedef Grpc__Reflection__V1alpha__ServiceResponse service_resp;

/* grpc::StatusCode numbers for error_response.error_code. */
#define ERR_NOT_FOUND PERFC_STATUS_NOT_FOUND
#define ERR_INVALID_ARGUMENT PERFC_STATUS_INVALID_ARGUMENT
#define ERR_UNIMPLEMENTED PERFC_STATUS_UNIMPLEMENTED

typedef struct rfile {
  perfc_file_desc fd; /* borrowed from the generated tables */
  size_t *deps;       /* indices of the files it imports (in the arena) */
  size_t n_deps;
} rfile;

typedef struct rsym {
  const char *name; /* full name without a leading dot */
  size_t file;
  int is_message; /* all_extension_numbers_of_type wants a message */
} rsym;

typedef struct rext {
  const char *extendee; /* full name without a leading dot */
  int32_t number;
  size_t file;
} rext;

typedef struct reflection {
  perfc_server *srv;
  perfc_arena *arena; /* every name and table below */
  rfile *files;
  size_t n_files, cap_files;
  rsym *syms;
  size_t n_syms, cap_syms;
  rext *exts;
  size_t n_exts, cap_exts;
  service_resp **services;
  size_t n_services;
} reflection;

/* ---- building the tables ------------------------------------------------- */

/* Makes room for one more element of `size` bytes in a malloc'd array. */
static int grow(void **items, size_t *cap, size_t n, size_t size) {
  if (n < *cap)
    return 0;
  size_t ncap = *cap ? *cap * 2 : 32;
  void *p = realloc(*items, ncap * size);
  if (p == NULL)
    return PERFC_ENOMEM;
  *items = p;
  *cap = ncap;
  return 0;
}

static void tables_free(reflection *r) {
  free(r->files);
  free(r->syms);
  free(r->exts);
  perfc_arena_free(r->arena);
  r->files = NULL;
  r->syms = NULL;
  r->exts = NULL;
  r->arena = NULL;
  r->services = NULL;
  r->n_files = r->cap_files = r->n_syms = r->cap_syms = 0;
  r->n_exts = r->cap_exts = r->n_services = 0;
}

static long find_file(const reflection *r, const char *name) {
  for (size_t i = 0; i < r->n_files; i++)
    if (strcmp(r->files[i].fd.name, name) == 0)
      return (long)i;
  return -1;
}

/* Several services share files (their own and common imports such as
 * descriptor.proto); each name is kept once. An entry without bytes names a
 * file the runtime carries (perfc/options.proto, the well-known types):
 * generated tables refer to those instead of each embedding a copy. */
static int add_file(reflection *r, const perfc_file_desc *fd) {
  if (fd->name == NULL || find_file(r, fd->name) >= 0)
    return 0;
  if (fd->data == NULL) {
    const perfc_file_desc *own = perfc_file_desc_builtin(fd->name);
    if (own == NULL) {
      perfc_log(PERFC_LOG_WARN,
                "reflection: a service's table names %s without its bytes, "
                "and this runtime does not carry that file; it is left out",
                fd->name);
      return 0;
    }
    fd = own;
  }
  if (grow((void **)&r->files, &r->cap_files, r->n_files, sizeof *r->files))
    return PERFC_ENOMEM;
  r->files[r->n_files++] = (rfile){.fd = *fd};
  return 0;
}

static const char *join(reflection *r, const char *scope, const char *name) {
  return scope[0] ? perfc_arena_sprintf(r->arena, "%s.%s", scope, name)
                  : perfc_arena_strdup(r->arena, name);
}

static int add_sym(reflection *r, const char *name, size_t file,
                   int is_message) {
  if (name == NULL)
    return PERFC_ENOMEM;
  if (grow((void **)&r->syms, &r->cap_syms, r->n_syms, sizeof *r->syms))
    return PERFC_ENOMEM;
  r->syms[r->n_syms++] =
      (rsym){.name = name, .file = file, .is_message = is_message};
  return 0;
}

static int add_ext(reflection *r,
                   const Google__Protobuf__FieldDescriptorProto *f,
                   const char *scope, size_t file) {
  int rc = add_sym(r, join(r, scope, f->name), file, 0);
  if (rc != 0 || f->extendee == NULL)
    return rc;
  const char *ext = f->extendee[0] == '.' ? f->extendee + 1 : f->extendee;
  if (grow((void **)&r->exts, &r->cap_exts, r->n_exts, sizeof *r->exts))
    return PERFC_ENOMEM;
  const char *copy = perfc_arena_strdup(r->arena, ext);
  if (copy == NULL)
    return PERFC_ENOMEM;
  r->exts[r->n_exts++] =
      (rext){.extendee = copy, .number = f->number, .file = file};
  return 0;
}

/* Enum values are scoped like C++ enumerators: siblings of their enum,
 * "pkg.VALUE" rather than "pkg.Enum.VALUE", as protobuf's DescriptorPool
 * names them (and grpc's reflection finds them). */
static int add_enum(reflection *r,
                    const Google__Protobuf__EnumDescriptorProto *e,
                    const char *scope, size_t file) {
  int rc = add_sym(r, join(r, scope, e->name), file, 0);
  for (size_t i = 0; rc == 0 && i < e->n_value; i++)
    rc = add_sym(r, join(r, scope, e->value[i]->name), file, 0);
  return rc;
}

static int add_message(reflection *r,
                       const Google__Protobuf__DescriptorProto *m,
                       const char *scope, size_t file) {
  const char *full = join(r, scope, m->name);
  int rc = add_sym(r, full, file, 1);
  for (size_t i = 0; rc == 0 && i < m->n_field; i++)
    rc = add_sym(r, join(r, full, m->field[i]->name), file, 0);
  for (size_t i = 0; rc == 0 && i < m->n_oneof_decl; i++)
    rc = add_sym(r, join(r, full, m->oneof_decl[i]->name), file, 0);
  for (size_t i = 0; rc == 0 && i < m->n_extension; i++)
    rc = add_ext(r, m->extension[i], full, file);
  for (size_t i = 0; rc == 0 && i < m->n_enum_type; i++)
    rc = add_enum(r, m->enum_type[i], full, file);
  for (size_t i = 0; rc == 0 && i < m->n_nested_type; i++)
    rc = add_message(r, m->nested_type[i], full, file);
  return rc;
}

/* Indexes what file `k` defines and resolves its imports. */
static int index_file(reflection *r, size_t k) {
  rfile *rf = &r->files[k];
  Google__Protobuf__FileDescriptorProto *fd =
      google__protobuf__file_descriptor_proto__unpack(NULL, rf->fd.len,
                                                      rf->fd.data);
  if (fd == NULL) {
    perfc_log(PERFC_LOG_ERROR,
              "reflection: the embedded descriptor of %s does not parse; "
              "it is left out",
              rf->fd.name);
    return 0;
  }
  const char *pkg = fd->package ? fd->package : "";
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < fd->n_message_type; i++)
    rc = add_message(r, fd->message_type[i], pkg, k);
  for (size_t i = 0; rc == 0 && i < fd->n_enum_type; i++)
    rc = add_enum(r, fd->enum_type[i], pkg, k);
  for (size_t i = 0; rc == 0 && i < fd->n_extension; i++)
    rc = add_ext(r, fd->extension[i], pkg, k);
  for (size_t i = 0; rc == 0 && i < fd->n_service; i++) {
    const Google__Protobuf__ServiceDescriptorProto *s = fd->service[i];
    const char *full = join(r, pkg, s->name);
    rc = add_sym(r, full, k, 0);
    for (size_t j = 0; rc == 0 && j < s->n_method; j++)
      rc = add_sym(r, join(r, full, s->method[j]->name), k, 0);
  }
  if (rc == 0 && fd->n_dependency > 0) {
    rf->deps = perfc_arena_alloc(r->arena, fd->n_dependency * sizeof *rf->deps);
    if (rf->deps == NULL)
      rc = PERFC_ENOMEM;
    /* An import missing from the tables (a service generated before perfc
     * embedded imports) is skipped: the answer is then incomplete, which a
     * client reports, rather than failing. */
    for (size_t i = 0; rc == 0 && i < fd->n_dependency; i++) {
      long d = find_file(r, fd->dependency[i]);
      if (d >= 0)
        rf->deps[rf->n_deps++] = (size_t)d;
    }
  }
  google__protobuf__file_descriptor_proto__free_unpacked(fd, NULL);
  return rc;
}

static int cmp_sym(const void *a, const void *b) {
  return strcmp(((const rsym *)a)->name, ((const rsym *)b)->name);
}

static int cmp_ext(const void *a, const void *b) {
  const rext *x = a, *y = b;
  int c = strcmp(x->extendee, y->extendee);
  return c != 0 ? c : (x->number > y->number) - (x->number < y->number);
}

static int build_tables(reflection *r) {
  int rc = perfc_arena_new(&r->arena, 0);
  if (rc != 0)
    return rc;
  size_t n = perfc_server_service_count(r->srv);
  r->services = perfc_arena_calloc(r->arena, (n + 1) * sizeof *r->services);
  if (r->services == NULL)
    return PERFC_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    const perfc_service_desc *d = perfc_server_service_at(r->srv, i);
    service_resp *sr = perfc_arena_alloc(r->arena, sizeof *sr);
    if (sr == NULL)
      return PERFC_ENOMEM;
    grpc__reflection__v1alpha__service_response__init(sr);
    sr->name = (char *)d->name;
    r->services[r->n_services++] = sr;
    for (size_t k = 0; rc == 0 && k < d->n_files; k++)
      rc = add_file(r, &d->files[k]);
    /* Tables from an older generator carry only the defining file. */
    if (rc == 0 && d->n_files == 0 && d->file_descriptor != NULL) {
      perfc_file_desc own = {d->proto_file, d->file_descriptor,
                             d->file_descriptor_len};
      rc = add_file(r, &own);
    }
    if (rc != 0)
      return rc;
  }
  for (size_t k = 0; rc == 0 && k < r->n_files; k++)
    rc = index_file(r, k);
  if (rc != 0)
    return rc;
  /* qsort's array may not be NULL even when empty (UBSan holds us to it):
   * a server with no extensions has no exts array at all. */
  if (r->n_syms > 0)
    qsort(r->syms, r->n_syms, sizeof *r->syms, cmp_sym);
  if (r->n_exts > 0)
    qsort(r->exts, r->n_exts, sizeof *r->exts, cmp_ext);
  return 0;
}

static int on_start(perfc_server *srv, void *user_data) {
  (void)srv;
  reflection *r = user_data;
  tables_free(r); /* a start that failed earlier may be retried */
  int rc = build_tables(r);
  if (rc != 0) {
    tables_free(r);
    perfc_log(PERFC_LOG_ERROR, "reflection: cannot build tables: %s",
              perfc_strerror(rc));
  }
  return rc;
}

static void reflection_free(void *user_data) {
  reflection *r = user_data;
  tables_free(r);
  free(r);
}

/* ---- answering ----------------------------------------------------------- */

static const rsym *find_sym(const reflection *r, const char *name) {
  rsym key = {.name = name};
  return bsearch(&key, r->syms, r->n_syms, sizeof *r->syms, cmp_sym);
}

/* The file, then each import followed by its own imports, each once: the
 * order grpc's reflection answers in, so that a client can build its pool
 * from the answer alone. */
static void closure(const reflection *r, size_t f, unsigned char *seen,
                    ProtobufCBinaryData *out, size_t *n) {
  if (seen[f])
    return;
  seen[f] = 1;
  out[*n].data = (uint8_t *)r->files[f].fd.data;
  out[*n].len = r->files[f].fd.len;
  (*n)++;
  for (size_t i = 0; i < r->files[f].n_deps; i++)
    closure(r, r->files[f].deps[i], seen, out, n);
}

/* Per-stream scratch, sized once from the tables so that a long stream
 * does not grow the call's arena. */
typedef struct scratch {
  ProtobufCBinaryData *blobs;
  unsigned char *seen;
  int32_t *numbers;
  char *message; /* malloc'd error text of the current answer */
} scratch;

typedef struct answer {
  reflection_resp resp;
  Grpc__Reflection__V1alpha__FileDescriptorResponse files;
  Grpc__Reflection__V1alpha__ExtensionNumberResponse numbers;
  Grpc__Reflection__V1alpha__ListServiceResponse list;
  Grpc__Reflection__V1alpha__ErrorResponse error;
} answer;

static void answer_error(answer *a, scratch *s, int code, const char *what,
                         const char *name) {
  free(s->message);
  if (asprintf(&s->message, "%s not found: %s", what, name) < 0)
    s->message = NULL;
  a->error.error_code = code;
  a->error.error_message = s->message ? s->message : (char *)what;
  a->resp.message_response_case = RESP_CASE(ERROR_RESPONSE);
  a->resp.error_response = &a->error;
}

static void answer_file(const reflection *r, answer *a, scratch *s, size_t f) {
  memset(s->seen, 0, r->n_files);
  size_t n = 0;
  closure(r, f, s->seen, s->blobs, &n);
  a->files.n_file_descriptor_proto = n;
  a->files.file_descriptor_proto = s->blobs;
  a->resp.message_response_case = RESP_CASE(FILE_DESCRIPTOR_RESPONSE);
  a->resp.file_descriptor_response = &a->files;
}

/* Index of the first extension of `type` with a number >= `number`. */
static size_t ext_lower_bound(const reflection *r, const char *type,
                              int32_t number) {
  size_t lo = 0, hi = r->n_exts;
  rext key = {.extendee = type, .number = number};
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (cmp_ext(&r->exts[mid], &key) < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

static void answer_request(const reflection *r, const reflection_req *req,
                           answer *a, scratch *s) {
  const char *name;
  switch (req->message_request_case) {
  case REQ_CASE(LIST_SERVICES):
    a->list.n_service = r->n_services;
    a->list.service = r->services;
    a->resp.message_response_case = RESP_CASE(LIST_SERVICES_RESPONSE);
    a->resp.list_services_response = &a->list;
    return;
  case REQ_CASE(FILE_BY_FILENAME): {
    name = req->file_by_filename ? req->file_by_filename : "";
    long f = find_file(r, name);
    if (f < 0)
      answer_error(a, s, ERR_NOT_FOUND, "file", name);
    else
      answer_file(r, a, s, (size_t)f);
    return;
  }
  case REQ_CASE(FILE_CONTAINING_SYMBOL): {
    name = req->file_containing_symbol ? req->file_containing_symbol : "";
    const rsym *sym = find_sym(r, name);
    if (sym == NULL)
      answer_error(a, s, ERR_NOT_FOUND, "symbol", name);
    else
      answer_file(r, a, s, sym->file);
    return;
  }
  case REQ_CASE(FILE_CONTAINING_EXTENSION): {
    const Grpc__Reflection__V1alpha__ExtensionRequest *e =
        req->file_containing_extension;
    name = e && e->containing_type ? e->containing_type : "";
    size_t i = ext_lower_bound(r, name, e ? e->extension_number : 0);
    if (e == NULL || i == r->n_exts || strcmp(r->exts[i].extendee, name) != 0 ||
        r->exts[i].number != e->extension_number)
      answer_error(a, s, ERR_NOT_FOUND, "extension of", name);
    else
      answer_file(r, a, s, r->exts[i].file);
    return;
  }
  case REQ_CASE(ALL_EXTENSION_NUMBERS_OF_TYPE): {
    name = req->all_extension_numbers_of_type
               ? req->all_extension_numbers_of_type
               : "";
    const rsym *sym = find_sym(r, name);
    if (sym == NULL || !sym->is_message) {
      answer_error(a, s, ERR_NOT_FOUND, "message type", name);
      return;
    }
    size_t n = 0;
    for (size_t i = ext_lower_bound(r, name, INT32_MIN);
         i < r->n_exts && strcmp(r->exts[i].extendee, name) == 0; i++)
      s->numbers[n++] = r->exts[i].number;
    a->numbers.base_type_name = (char *)name;
    a->numbers.n_extension_number = n;
    a->numbers.extension_number = s->numbers;
    a->resp.message_response_case = RESP_CASE(ALL_EXTENSION_NUMBERS_RESPONSE);
    a->resp.all_extension_numbers_response = &a->numbers;
    return;
  }
  default:
    /* grpc's own servers answer an empty or unknown request the same way. */
    answer_error(a, s, ERR_UNIMPLEMENTED, "request kind", "(none set)");
    return;
  }
}

static perfc_status_code
server_reflection_info(perfc_ctx *ctx, perfc_stream *stream, void *user_data) {
  const reflection *r = user_data;
  scratch s = {
      .blobs = perfc_ctx_alloc(ctx, (r->n_files + 1) * sizeof *s.blobs),
      .seen = perfc_ctx_alloc(ctx, r->n_files + 1),
      .numbers = perfc_ctx_alloc(ctx, (r->n_exts + 1) * sizeof *s.numbers),
  };
  if (s.blobs == NULL || s.seen == NULL || s.numbers == NULL)
    return perfc_ctx_error(ctx, PERFC_STATUS_RESOURCE_EXHAUSTED,
                           "out of memory");
  perfc_status_code code = PERFC_STATUS_OK;
  for (;;) {
    reflection_req *req;
    int rc =
        grpc__reflection__v1alpha__server_reflection__server_reflection_info__recv(
            stream, &req);
    if (rc == 0)
      break;
    if (rc < 0) {
      /* A malformed message already set its INVALID_ARGUMENT message. */
      code = rc == PERFC_EPARSE
                 ? PERFC_STATUS_INVALID_ARGUMENT
                 : perfc_ctx_error(ctx, PERFC_STATUS_CANCELLED,
                                   "reflection: the client went away");
      break;
    }
    answer a;
    grpc__reflection__v1alpha__server_reflection_response__init(&a.resp);
    grpc__reflection__v1alpha__file_descriptor_response__init(&a.files);
    grpc__reflection__v1alpha__extension_number_response__init(&a.numbers);
    grpc__reflection__v1alpha__list_service_response__init(&a.list);
    grpc__reflection__v1alpha__error_response__init(&a.error);
    a.resp.valid_host = req->host;
    a.resp.original_request = req;
    answer_request(r, req, &a, &s);
    rc =
        grpc__reflection__v1alpha__server_reflection__server_reflection_info__send(
            stream, &a.resp);
    if (rc != 0) {
      code = perfc_ctx_error(
          ctx,
          rc == PERFC_ETOOBIG ? PERFC_STATUS_RESOURCE_EXHAUSTED
                              : PERFC_STATUS_CANCELLED,
          "reflection: cannot send the answer: %s", perfc_strerror(rc));
      break;
    }
  }
  free(s.message);
  return code;
}

static const Grpc__Reflection__V1alpha__ServerReflection_Handlers handlers = {
    .server_reflection_info = server_reflection_info,
};
static const Grpc__Reflection__V1__ServerReflection_Handlers handlers_v1 = {
    .server_reflection_info = server_reflection_info,
};

/* grpc.reflection.v1 is v1alpha under another package: the same messages,
 * field numbers and types (grpc-proto's two files differ only in package
 * and options). So v1 is served by the v1alpha code above: its description
 * is the generated one (paths, name, the v1 file for reflection itself)
 * with the method's messages read and written as v1alpha's, which are the
 * same bytes on the wire. Built once; the server borrows it. */
static perfc_method_desc v1_methods[GRPC__REFLECTION__V1__SERVER_REFLECTION__PERFC_METHOD_COUNT];
static perfc_service_desc v1_desc;
static pthread_once_t v1_once = PTHREAD_ONCE_INIT;

static void v1_desc_init(void) {
  const perfc_service_desc *gen = &grpc__reflection__v1__server_reflection__perfc_desc;
  const perfc_method_desc *alpha =
      grpc__reflection__v1alpha__server_reflection__perfc_desc.methods;
  v1_desc = *gen;
  for (size_t i = 0; i < gen->n_methods; i++) {
    v1_methods[i] = gen->methods[i];
    v1_methods[i].input = alpha[i].input;
    v1_methods[i].output = alpha[i].output;
  }
  v1_desc.methods = v1_methods;
}

int perfc_reflection_register(perfc_server *srv) {
  if (srv == NULL)
    return perfc__fail(PERFC_EINVAL, "reflection: register needs a server");
  const char *svc =
      grpc__reflection__v1alpha__server_reflection__perfc_desc.name;
  const char *svc_v1 = grpc__reflection__v1__server_reflection__perfc_desc.name;
  for (size_t i = 0; i < perfc_server_service_count(srv); i++)
    if (strcmp(perfc_server_service_at(srv, i)->name, svc) == 0 ||
        strcmp(perfc_server_service_at(srv, i)->name, svc_v1) == 0)
      return perfc__fail(PERFC_EEXIST,
                         "reflection: %s is already on the "
                         "server",
                         perfc_server_service_at(srv, i)->name);
  pthread_once(&v1_once, v1_desc_init);
  reflection *r = calloc(1, sizeof *r);
  if (r == NULL)
    return PERFC_ENOMEM;
  r->srv = srv;
  /* The server owns `r` from here on (freed at perfc_server_free), so the
   * handler's user_data can never dangle, whatever fails next. */
  int rc = perfc_server_add_shutdown_hook(srv, NULL, r, reflection_free);
  if (rc != 0) {
    free(r);
    return rc;
  }
  rc = perfc_server_add_start_hook(srv, on_start, r);
  if (rc == 0)
    rc = grpc__reflection__v1alpha__server_reflection__perfc_register(
        srv, &handlers, r);
  if (rc == 0)
    rc = perfc_server_add_service(srv, &v1_desc, &handlers_v1, r);
  if (rc != 0)
    perfc_log(PERFC_LOG_ERROR, "reflection: cannot register: %s",
              perfc_strerror(rc));
  return rc;
}

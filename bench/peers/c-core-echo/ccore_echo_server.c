/*
 * ccore-echo-server — the ceiling perfc is measured against: a gRPC echo
 * server written directly on the gRPC C core (grpc/grpc.h) that decodes
 * nothing. /bench.v1.Echo/Unary answers with the received byte buffer as is;
 * since EchoRequest and EchoResponse have the same wire shape (bytes payload
 * = 1), the echoed bytes are a valid EchoResponse.
 *
 * Room: bench/peers — a benchmark peer, not part of libperfc. It uses the
 * same server-core shape the runtime promises (docs/benchmarks.md and
 * ARCHITECTURE.md "How a request flows"), minus everything a framework adds
 * (decode, arena, interceptors, handler dispatch), so the gap between this
 * server and perfc-echo-server is the price of the framework.
 *
 * Shape: one next-type completion queue and one poller thread per --threads;
 * the method is registered with GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER and
 * --requests calls are pre-posted on every queue; a matched call re-arms at
 * once and is answered with ONE batch (SEND_INITIAL_METADATA + SEND_MESSAGE +
 * SEND_STATUS_FROM_SERVER + RECV_CLOSE_ON_SERVER). Unknown methods are caught
 * by a generic grpc_server_request_call and answered UNIMPLEMENTED.
 *
 * Usage: ccore-echo-server --listen HOST:PORT [--threads N] [--requests K]
 *          [--max-streams N] [--opt-target latency|blend|throughput]
 *          [--minimal-stack] [--arg KEY=VALUE]...
 *   --arg passes any channel arg to grpc_server_create (an integer when VALUE
 *   parses as one, else a string), for tuning experiments.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ECHO_METHOD "/bench.v1.Echo/Unary"

/* Defaults, each with its reason. */
/** Calls pre-posted per queue. h2load -c 16 -m 32 keeps 512 streams open;
 *  with fewer posted requests than concurrent calls, arrivals wait in the
 *  server's pending list (and beyond grpc's pending limit are refused). */
#define DEFAULT_REQUESTS_PER_QUEUE 512
/** The same stream limit perfc uses (PERFC_DEFAULT_MAX_CONCURRENT_STREAMS):
 *  the core's default is unlimited. */
#define DEFAULT_MAX_CONCURRENT_STREAMS 1024
/** Generic (unknown-method) requests per queue: errors are rare. */
#define GENERIC_REQUESTS_PER_QUEUE 4

/* Every completion-queue tag is a functor: the poller calls tag->run(tag, ok)
 * without looking anything up. */
typedef struct tag tag;
struct tag {
  void (*run)(tag *t, int ok);
};

typedef struct poller poller;

/* One call slot. It serves one request: first as a pre-posted request, then,
 * once matched, as the call until its batch completes; then it goes back to
 * its poller's free list. A slot only ever completes on its own queue, so
 * the free list is touched by one thread and needs no lock. */
typedef struct call_slot {
  tag matched; /* the pre-posted request was matched (or failed) */
  tag done;    /* the answer batch completed */
  poller *owner;
  int generic;
  grpc_call *call;
  gpr_timespec deadline;
  grpc_metadata_array md;
  grpc_byte_buffer *payload; /* registered method only */
  grpc_call_details details; /* generic only */
  int cancelled;
  struct call_slot *next_free;
} call_slot;

/* The slot a tag member belongs to. */
#define SLOT_OF(t, member)                                                     \
  ((call_slot *)((char *)(t)-offsetof(call_slot, member)))

struct poller {
  grpc_completion_queue *cq;
  pthread_t thread;
  call_slot *free_list;
};

static grpc_server *g_server;
static void *g_method; /* registered method handle */
/* Set by main before shutdown; read by the pollers before re-arming. */
static atomic_int g_shutting_down;
static unsigned g_requests = DEFAULT_REQUESTS_PER_QUEUE;

/* The server-shutdown notification: posted on queue 0; main waits for it. */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static int g_server_shut;
static void on_server_shutdown(tag *t, int ok) {
  (void)t;
  (void)ok;
  pthread_mutex_lock(&g_mu);
  g_server_shut = 1;
  pthread_cond_signal(&g_cv);
  pthread_mutex_unlock(&g_mu);
}
static tag g_shutdown_tag = {on_server_shutdown};

static void on_matched(tag *t, int ok);
static void on_done(tag *t, int ok);

static call_slot *slot_get(poller *p) {
  call_slot *s = p->free_list;
  if (s) {
    p->free_list = s->next_free;
  } else {
    s = calloc(1, sizeof(*s));
    if (!s) {
      fprintf(stderr, "ccore-echo-server: out of memory\n");
      abort(); /* a benchmark peer, not library code: failing loudly is right */
    }
    s->matched.run = on_matched;
    s->done.run = on_done;
    s->owner = p;
  }
  s->call = NULL;
  s->payload = NULL;
  s->cancelled = 0;
  grpc_metadata_array_init(&s->md);
  return s;
}

static void slot_put(call_slot *s) {
  grpc_metadata_array_destroy(&s->md);
  if (s->generic)
    grpc_call_details_destroy(&s->details);
  if (s->payload)
    grpc_byte_buffer_destroy(s->payload);
  if (s->call)
    grpc_call_unref(s->call);
  s->payload = NULL;
  s->call = NULL;
  s->next_free = s->owner->free_list;
  s->owner->free_list = s;
}

/* Posts one request for the echo method (generic == 0) or for any unknown
 * method (generic == 1) on poller p's queue. */
static void post_request(poller *p, int generic) {
  call_slot *s = slot_get(p);
  grpc_call_error e;
  s->generic = generic;
  if (generic) {
    grpc_call_details_init(&s->details);
    e = grpc_server_request_call(g_server, &s->call, &s->details, &s->md, p->cq,
                                 p->cq, &s->matched);
  } else {
    e = grpc_server_request_registered_call(g_server, g_method, &s->call,
                                            &s->deadline, &s->md, &s->payload,
                                            p->cq, p->cq, &s->matched);
  }
  if (e != GRPC_CALL_OK) {
    /* Only happens while shutting down; the slot was never handed over. */
    if (!atomic_load_explicit(&g_shutting_down, memory_order_relaxed))
      fprintf(stderr, "ccore-echo-server: request_call failed: %d\n", (int)e);
    slot_put(s);
  }
}

static void on_matched(tag *t, int ok) {
  call_slot *s = SLOT_OF(t, matched);
  poller *p = s->owner;
  if (!ok) {
    /* The server is shutting down; the request was never matched. */
    slot_put(s);
    return;
  }
  /* Re-arm first, so a burst of new calls finds a posted request. */
  if (!atomic_load_explicit(&g_shutting_down, memory_order_relaxed))
    post_request(p, s->generic);

  grpc_op ops[4];
  size_t n = 0;
  memset(ops, 0, sizeof(ops));
  ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[n].data.send_initial_metadata.count = 0;
  n++;
  if (!s->generic && s->payload) {
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = s->payload;
    n++;
  }
  ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[n].data.send_status_from_server.trailing_metadata_count = 0;
  grpc_slice details;
  if (s->generic) {
    ops[n].data.send_status_from_server.status = GRPC_STATUS_UNIMPLEMENTED;
    details = grpc_slice_from_static_string("unknown method");
    ops[n].data.send_status_from_server.status_details = &details;
  } else if (!s->payload) {
    ops[n].data.send_status_from_server.status = GRPC_STATUS_INTERNAL;
    details = grpc_slice_from_static_string("request message missing");
    ops[n].data.send_status_from_server.status_details = &details;
  } else {
    ops[n].data.send_status_from_server.status = GRPC_STATUS_OK;
    ops[n].data.send_status_from_server.status_details = NULL;
  }
  n++;
  ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  ops[n].data.recv_close_on_server.cancelled = &s->cancelled;
  n++;
  grpc_call_error e = grpc_call_start_batch(s->call, ops, n, &s->done, NULL);
  if (e != GRPC_CALL_OK) {
    fprintf(stderr, "ccore-echo-server: start_batch failed: %d\n", (int)e);
    slot_put(s);
  }
}

/* The batch took its own reference to the payload's slices, so the buffer is
 * destroyed here, with the call, in slot_put. */
static void on_done(tag *t, int ok) {
  (void)ok;
  slot_put(SLOT_OF(t, done));
}

static void *poll_loop(void *arg) {
  poller *p = arg;
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(
        p->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN)
      break;
    if (ev.type == GRPC_OP_COMPLETE)
      ((tag *)ev.tag)->run((tag *)ev.tag, ev.success);
  }
  while (p->free_list) {
    call_slot *s = p->free_list;
    p->free_list = s->next_free;
    free(s);
  }
  return NULL;
}

static void usage(FILE *f) {
  fprintf(f, "usage: ccore-echo-server --listen HOST:PORT [--threads N] "
             "[--requests K]\n"
             "         [--max-streams N] [--opt-target "
             "latency|blend|throughput] [--minimal-stack]\n"
             "         [--arg KEY=VALUE]...\n");
}

int main(int argc, char **argv) {
  const char *listen = NULL;
  const char *opt_target = NULL;
  long threads = sysconf(_SC_NPROCESSORS_ONLN);
  int max_streams = DEFAULT_MAX_CONCURRENT_STREAMS;
  int minimal_stack = 0;
  grpc_arg extra[16];
  size_t nextra = 0;

  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--minimal-stack")) {
      minimal_stack = 1;
      continue;
    }
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      return 0;
    }
    if (!v) {
      usage(stderr);
      return 2;
    }
    if (!strcmp(a, "--listen"))
      listen = v;
    else if (!strcmp(a, "--threads"))
      threads = atol(v);
    else if (!strcmp(a, "--requests"))
      g_requests = (unsigned)atol(v);
    else if (!strcmp(a, "--max-streams"))
      max_streams = atoi(v);
    else if (!strcmp(a, "--opt-target"))
      opt_target = v;
    else if (!strcmp(a, "--arg")) {
      char *eq = strchr(v, '=');
      if (!eq || nextra == sizeof(extra) / sizeof(extra[0])) {
        fprintf(stderr, "ccore-echo-server: bad --arg '%s'\n", v);
        return 2;
      }
      *eq = '\0';
      char *end = NULL;
      long n = strtol(eq + 1, &end, 10);
      extra[nextra].key = (char *)v;
      if (eq[1] != '\0' && *end == '\0') {
        extra[nextra].type = GRPC_ARG_INTEGER;
        extra[nextra].value.integer = (int)n;
      } else {
        extra[nextra].type = GRPC_ARG_STRING;
        extra[nextra].value.string = eq + 1;
      }
      nextra++;
    } else {
      fprintf(stderr, "ccore-echo-server: unknown option '%s'\n", a);
      usage(stderr);
      return 2;
    }
    i++;
  }
  if (!listen || threads < 1 || g_requests < 1 || max_streams < 1) {
    usage(stderr);
    return 2;
  }

  /* Block the stop signals before grpc_init so every thread the core (and
   * we) start inherits the mask; main then takes them with sigwait. A shell
   * starts background jobs with SIGINT ignored, and an ignored signal is
   * discarded even while blocked, so the dispositions are reset first. */
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, NULL);

  grpc_init();

  grpc_arg args[3 + sizeof(extra) / sizeof(extra[0])];
  size_t nargs = 0;
  args[nargs].type = GRPC_ARG_INTEGER;
  args[nargs].key = GRPC_ARG_MAX_CONCURRENT_STREAMS;
  args[nargs].value.integer = max_streams;
  nargs++;
  if (opt_target) {
    args[nargs].type = GRPC_ARG_STRING;
    args[nargs].key = GRPC_ARG_OPTIMIZATION_TARGET;
    args[nargs].value.string = (char *)opt_target;
    nargs++;
  }
  if (minimal_stack) {
    args[nargs].type = GRPC_ARG_INTEGER;
    args[nargs].key = GRPC_ARG_MINIMAL_STACK;
    args[nargs].value.integer = 1;
    nargs++;
  }
  for (size_t i = 0; i < nextra; i++)
    args[nargs++] = extra[i];
  grpc_channel_args chargs = {nargs, args};
  g_server = grpc_server_create(&chargs, NULL);

  /* Host NULL: match any :authority. */
  g_method =
      grpc_server_register_method(g_server, ECHO_METHOD, NULL,
                                  GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);

  poller *pollers = calloc((size_t)threads, sizeof(*pollers));
  if (!pollers)
    return 1;
  for (long i = 0; i < threads; i++) {
    pollers[i].cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(g_server, pollers[i].cq, NULL);
  }

  grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
  int port = grpc_server_add_http2_port(g_server, listen, creds);
  grpc_server_credentials_release(creds);
  if (port <= 0) {
    fprintf(stderr, "ccore-echo-server: cannot listen on %s\n", listen);
    return 1;
  }
  grpc_server_start(g_server);

  for (long i = 0; i < threads; i++) {
    for (unsigned k = 0; k < g_requests; k++)
      post_request(&pollers[i], 0);
    for (unsigned k = 0; k < GENERIC_REQUESTS_PER_QUEUE; k++)
      post_request(&pollers[i], 1);
  }
  for (long i = 0; i < threads; i++) {
    if (pthread_create(&pollers[i].thread, NULL, poll_loop, &pollers[i])) {
      fprintf(stderr, "ccore-echo-server: cannot create thread\n");
      return 1;
    }
  }

  /* The host part as given, the port as bound (so ":0" reports the real
   * port). */
  const char *colon = strrchr(listen, ':');
  printf("listening on %.*s:%d\n", (int)(colon ? colon - listen : 0), listen,
         port);
  fflush(stdout);

  int sig = 0;
  sigwait(&stop, &sig);
  fprintf(stderr, "ccore-echo-server: signal %d, shutting down\n", sig);

  /* Shutdown order the core requires: shutdown_and_notify, (cancel), wait
   * for the notify tag while the pollers keep draining, destroy the server,
   * then shut down and drain every queue, join, destroy queues, grpc_shutdown.
   */
  atomic_store(&g_shutting_down, 1);
  grpc_server_shutdown_and_notify(g_server, pollers[0].cq, &g_shutdown_tag);
  grpc_server_cancel_all_calls(g_server);
  pthread_mutex_lock(&g_mu);
  while (!g_server_shut)
    pthread_cond_wait(&g_cv, &g_mu);
  pthread_mutex_unlock(&g_mu);
  grpc_server_destroy(g_server);
  for (long i = 0; i < threads; i++)
    grpc_completion_queue_shutdown(pollers[i].cq);
  for (long i = 0; i < threads; i++) {
    pthread_join(pollers[i].thread, NULL);
    grpc_completion_queue_destroy(pollers[i].cq);
  }
  free(pollers);
  grpc_shutdown();
  return 0;
}

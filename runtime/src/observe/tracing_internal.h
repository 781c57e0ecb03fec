/*
 * tracing_internal.h — what tracing.c (spans, sampling, interceptors) and
 * tracing_export.c (the batch queue and the OTLP/HTTP exporter) share.
 * Never installed.
 *
 * Room: runtime/src/observe private header.
 */
#ifndef PERFC_OBSERVE_TRACING_INTERNAL_H
#define PERFC_OBSERVE_TRACING_INTERNAL_H

#include "perfc/tracing.h"

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>

/* Attribute values: the types OTLP's AnyValue has that spans use. */
enum { PERFC__ATTR_STR = 1, PERFC__ATTR_INT = 2, PERFC__ATTR_BOOL = 3 };

/* Which of an attribute's strings the end-of-span copy must copy: the
 * others live as long as the tracer (literals, and the method strings the
 * tracer interns), so a queued span may point at them. */
enum { PERFC__COPY_KEY = 1, PERFC__COPY_VAL = 2 };

/* Strings carry their length, measured once when they are set: the span's
 * end copy and the encoder never run strlen. In a queued span (qspan) every
 * string is also NUL-terminated; on a live span a string marked for copy
 * may not be (a slice of the peer or of request metadata). */
typedef struct perfc__attr {
  const char *key;
  uint32_t klen;
  uint32_t vlen; /* PERFC__ATTR_STR: bytes of v.s */
  uint8_t type;
  uint8_t copy; /* PERFC__COPY_* */
  union {
    const char *s;
    int64_t i;
  } v;
} perfc__attr;

/* An event; `msg_type` non-NULL makes it an RPC message event
 * (message.type SENT/RECEIVED, message.id), the semantic conventions'.
 * msg_type is always a literal. */
typedef struct perfc__event {
  int64_t time_unix_ns;
  const char *name;
  uint32_t name_len;
  uint8_t name_copy; /* 0: a literal, never copied */
  const char *msg_type;
  int64_t msg_id;
} perfc__event;

/* A span as it waits in the export queue: one block holding the struct,
 * its arrays and the strings that had to be copied (the single copy a
 * span makes when it ends); the other strings are the tracer's. */
typedef struct perfc__qspan {
  uint8_t trace_id[16];
  uint8_t span_id[8];
  uint8_t parent_id[8];
  uint8_t has_parent;
  uint8_t kind;
  uint8_t status;
  uint8_t flags;
  int64_t start_unix_ns;
  int64_t end_unix_ns;
  const char *name;
  const char *status_msg;
  const char *tracestate;
  uint32_t name_len, status_msg_len, tracestate_len;
  uint32_t nattrs, nevents, dropped_attrs, dropped_events;
  perfc__attr *attrs;
  perfc__event *events;
  /* attrs[0..pre_n) already encoded as OTLP Span.attributes elements
   * (pre_len bytes, the tracer's: a server span's rpc.system, rpc.service
   * and rpc.method are the same for every call of its method), which the
   * encoder copies instead of encoding them again. pre_n 0: none. */
  const uint8_t *pre;
  uint32_t pre_len, pre_n;
  /* `name` and `kind` already encoded (Span fields 5 and 6, the tracer's:
   * the same for every server span of a method); NULL: encode them. */
  const uint8_t *pre_head;
  uint32_t pre_head_len;
} perfc__qspan;

/* Bounded multi-producer single-consumer queue (Vyukov's array queue):
 * producers claim a cell with one CAS and never wait; a full queue is a
 * failed push. Each cell keeps a buffer of PERFC__QCELL_BYTES that the
 * producer flattens its span into and the exporter gives back once the
 * span is encoded: a span made on one thread and freed on another cost
 * glibc's malloc a slow path on both (about 330 instructions on the call's
 * thread alone). A larger span gets a block of its own, freed by the
 * exporter. */
#define PERFC__QCELL_BYTES 512
typedef struct perfc__qcell {
  atomic_size_t seq;
  perfc__qspan *span; /* in `buf`, or a block of its own; NULL: none */
  void *buf;          /* PERFC__QCELL_BYTES: in tr->cell_mem, or made on
                       * first use when that block could not be made */
} perfc__qcell;

typedef struct perfc__tracing_cfg {
  int disabled;
  perfc_sampler sampler;
  double ratio;
  char *service_name;
  char *resource_attrs; /* normalised "k=v\0k=v\0\0" pairs, decoded */
  char *endpoint;
  char *headers;        /* "Key: value\0...\0\0" */
  int gzip;
  size_t max_queue, max_batch;
  int64_t delay_ms, timeout_ms, retry_initial_ms, retry_max_ms,
      retry_elapsed_ms, grace_ms;
  unsigned max_events, max_attrs;
  int debug;           /* keep spans for /debug/traces */
  unsigned debug_ring; /* spans per ring */
} perfc__tracing_cfg;

typedef struct perfc__dbg_ring perfc__dbg_ring;

struct perfc_tracer {
  perfc__tracing_cfg cfg;
  uint64_t ratio_bound; /* trace ids whose low 63 bits are below are kept */
  int fast_off;         /* always_off: the server hook does nothing */
  perfc_client_interceptor cic;

  /* queue */
  perfc__qcell *cells;
  size_t mask;
  void *cell_mem; /* every cell's buffer, one block; NULL: made per cell */
  _Alignas(64) atomic_size_t enq;
  _Alignas(64) atomic_size_t deq;
  _Alignas(64) atomic_uint_fast64_t dropped_full;

  /* exporter */
  pthread_t thread;
  int thread_started;
  sem_t wake;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  size_t flush_target; /* export at least up to this enqueue position */
  size_t done_pos;     /* positions below are answered */
  int stopping;
  atomic_int stop;
  void *http;      /* CURL * */
  void *http_hdrs; /* struct curl_slist *: the request headers, made once */

  /* counters, written by the exporter thread only (and dropped_full) */
  atomic_uint_fast64_t exported, dropped_export, requests, retries, popped;
  perfc_counter *m_exported, *m_drop_full, *m_drop_export, *m_drop_shutdown;

  /* Method strings the server spans point at (tracing.c, intern()): kept
   * until the tracer is freed, after its queue is drained, so a span
   * queued when its server is freed still has them. One per distinct
   * string; made at method_init only. */
  pthread_mutex_t intern_mu;
  struct perfc__istr *interned;

  /* /debug/traces (tracing_debug.c): rings made on first use */
  _Atomic(perfc__dbg_ring *) dbg_rings[PERFC_TRACING_DEBUG_MAX_RINGS];
};

/* Claims a queue cell for a span of `size` bytes and returns memory to
 * flatten it into, then perfc__tracing_publish() hands it to the exporter.
 * Never blocks: NULL when the queue is full or memory is short (counted as
 * a queue_full drop; nothing to publish). */
void *perfc__tracing_claim(perfc_tracer *tr, size_t size, size_t *ticket);
void perfc__tracing_publish(perfc_tracer *tr, size_t ticket, perfc__qspan *q);
/* Copies an ended sampled span into this thread's /debug/traces ring
 * (tracing_debug.c); frees the rings. */
void perfc__tracing_debug_record(perfc_tracer *tr, const perfc__qspan *q);
void perfc__tracing_debug_free(perfc_tracer *tr);
/* The version sent as telemetry.sdk.version and the scope's version. */
#define PERFC_TRACING_VERSION "0.1.0"

/* The exporter's encode buffer, reused across batches: written back to
 * front, so the body is [p, mem + cap). Zero-initialised before first use. */
typedef struct perfc__otlp_buf {
  uint8_t *mem;
  size_t cap;
  uint8_t *p;
} perfc__otlp_buf;

/* Writes ExportTraceServiceRequest (OTLP protobuf) for spans[0..n) and the
 * resource of `cfg` into `b`; `*out` points into `b` until its next use.
 * Returns 0 or PERFC_ENOMEM (tracing_export.c). */
int perfc__otlp_encode(perfc__otlp_buf *b, const perfc__tracing_cfg *cfg,
                       perfc__qspan *const *spans, size_t n,
                       const uint8_t **out, size_t *len);
void perfc__otlp_buf_free(perfc__otlp_buf *b);
/* Encodes attrs[0..n) as the Span.attributes elements the encoder would
 * write for them (a qspan's `pre`), into a malloc'd block the caller frees;
 * NULL when out of memory. */
uint8_t *perfc__otlp_attrs_encode(const perfc__attr *attrs, size_t n,
                                  size_t *len);
/* Encodes Span.name and Span.kind as the encoder would write them (a
 * qspan's `pre_head`), into a malloc'd block; NULL when out of memory. */
uint8_t *perfc__otlp_head_encode(const char *name, size_t name_len, int kind,
                                 size_t *len);

/* Starts and stops the exporter thread (tracing_export.c). */
int perfc__tracing_export_start(perfc_tracer *tr);
void perfc__tracing_export_stop(perfc_tracer *tr);

/* The sampling decision for a new span of trace `trace_id` whose parent
 * context is `parent` (NULL for a root). Exported for the unit tests. */
int perfc__tracing_sample(const perfc_tracer *tr,
                          const perfc_span_context *parent,
                          const uint8_t trace_id[16]);
/* Fills `buf` with random bytes from this thread's generator (seeded from
 * getrandom on first use). */
void perfc__tracing_random(void *buf, size_t n);
/* Reseeds this thread's generator, for tests that need fixed ids. */
void perfc__tracing_seed(uint64_t seed);

#endif

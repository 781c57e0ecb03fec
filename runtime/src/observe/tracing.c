/*
 * tracing.c — the tracing core: W3C trace context, ids, sampling, the span
 * model, configuration from options and OTEL_* variables, and the server
 * and client interceptors that make a span per call.
 *
 * Room: runtime/src/observe. Uses perfc/interceptor.h, the server's
 * per-call slot lookup (perfc__ctx_call_state) and core/. Export (queue,
 * OTLP/HTTP) lives in tracing_export.c.
 *
 * Cost model. With an always_off sampler no server hook is installed: the
 * trace context a handler passes on is computed only if it makes an
 * outgoing call. Otherwise a server span is allocated
 * from the call's arena (freed with the call, no malloc), its attributes
 * point at strings (with their lengths) that live as long as the call or
 * the tracer, and only a sampled span is copied, once, into its queue
 * cell's buffer when it ends (only the strings that do not live as long as
 * the tracer) and pushed into a lock-free bounded queue. A full queue drops the span and
 * counts it; a call never waits for the exporter.
 */
#include "observe/tracing_internal.h"
#include "core/error_internal.h"
#include "perfc/client.h"
#include "perfc/log.h"
#include "server/server_internal.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

/* ---- ids ---------------------------------------------------------------------- */

/* wyrand per thread: ids need to be unique and uniformly distributed (the
 * ratio sampler reads their bits), not secret; a system call per id would
 * cost more than the rest of a span. One 64x64->128 multiply per 8 bytes
 * (about 10 instructions; xoshiro256**, used before, took about 30 with
 * its four words of state), a period of 2^64 per thread, and it passes
 * PractRand and BigCrush. Seeded from getrandom once per thread. */
/* initial-exec: libperfc is linked, not dlopen'ed, so its few bytes of
 * thread-locals fit glibc's static TLS reserve, and each access is one
 * %fs-relative load instead of a __tls_get_addr call. */
static _Thread_local uint64_t rng_s __attribute__((tls_model("initial-exec")));
static _Thread_local int rng_seeded __attribute__((tls_model("initial-exec")));

static uint64_t splitmix(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void perfc__tracing_seed(uint64_t seed) {
  rng_s = splitmix(&seed);
  rng_seeded = 1;
}

static void rng_seed_once(void) {
  uint64_t seed;
  if (getrandom(&seed, sizeof seed, 0) != (ssize_t)sizeof seed) {
    /* getrandom cannot fail for 8 bytes once the pool is initialised;
     * if it somehow does, time and the thread's stack address still give
     * distinct streams per thread. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^
           (uint64_t)(uintptr_t)&seed;
  }
  perfc__tracing_seed(seed);
}

static inline uint64_t rng_next(void) {
  if (__builtin_expect(!rng_seeded, 0))
    rng_seed_once();
  uint64_t x = (rng_s += 0xa0761d6478bd642fULL);
  __uint128_t m = (__uint128_t)x * (x ^ 0xe7037ed1a0b428dbULL);
  return (uint64_t)(m >> 64) ^ (uint64_t)m;
}

void perfc__tracing_random(void *buf, size_t n) {
  uint8_t *p = buf;
  while (n > 0) {
    uint64_t r = rng_next();
    size_t k = n < 8 ? n : 8;
    memcpy(p, &r, k);
    p += k;
    n -= k;
  }
}

static int all_zero(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i])
      return 0;
  return 1;
}

/* Random ids, never all zero (W3C: invalid). Whole words, no byte array
 * on the stack: each id is one or two draws and stores. */
static inline void new_span_id(uint8_t id[8]) {
  uint64_t a;
  do
    a = rng_next();
  while (a == 0);
  memcpy(id, &a, 8);
}

static inline void new_trace_id(uint8_t id[16]) {
  uint64_t a, b;
  do {
    a = rng_next();
    b = rng_next();
  } while ((a | b) == 0);
  memcpy(id, &a, 8);
  memcpy(id + 8, &b, 8);
}

/* ---- W3C trace context ------------------------------------------------------ */

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1; /* upper case is invalid in traceparent */
}

static int parse_hex(const char *s, uint8_t *out, size_t nbytes) {
  for (size_t i = 0; i < nbytes; i++) {
    int h = hexval(s[2 * i]), l = hexval(s[2 * i + 1]);
    if (h < 0 || l < 0)
      return -1;
    out[i] = (uint8_t)(h << 4 | l);
  }
  return 0;
}

int perfc_traceparent_parse(const char *s, size_t len, perfc_span_context *out) {
  perfc_span_context sc;
  uint8_t version;
  if (s == NULL || out == NULL || len < PERFC_TRACEPARENT_LEN)
    return PERFC_EINVAL;
  if (parse_hex(s, &version, 1) != 0 || version == 0xff)
    return PERFC_EINVAL;
  /* Version 00 is exactly 55 characters; a later version may append
   * fields, but only after a '-' (W3C Trace Context, "Versioning"). */
  if (version == 0 && len != PERFC_TRACEPARENT_LEN)
    return PERFC_EINVAL;
  if (len > PERFC_TRACEPARENT_LEN && s[PERFC_TRACEPARENT_LEN] != '-')
    return PERFC_EINVAL;
  if (s[2] != '-' || s[35] != '-' || s[52] != '-')
    return PERFC_EINVAL;
  if (parse_hex(s + 3, sc.trace_id, 16) != 0 ||
      parse_hex(s + 36, sc.span_id, 8) != 0 ||
      parse_hex(s + 53, &sc.trace_flags, 1) != 0)
    return PERFC_EINVAL;
  if (all_zero(sc.trace_id, 16) || all_zero(sc.span_id, 8))
    return PERFC_EINVAL;
  /* Only the sampled bit is defined; other bits are not passed on. */
  sc.trace_flags &= PERFC_TRACE_FLAG_SAMPLED;
  sc.remote = 1;
  *out = sc;
  return 0;
}

static void put_hex(char *o, const uint8_t *b, size_t n) {
  static const char hx[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    o[2 * i] = hx[b[i] >> 4];
    o[2 * i + 1] = hx[b[i] & 15];
  }
}

void perfc_traceparent_format(const perfc_span_context *sc, char *out) {
  out[0] = '0';
  out[1] = '0';
  out[2] = '-';
  put_hex(out + 3, sc->trace_id, 16);
  out[35] = '-';
  put_hex(out + 36, sc->span_id, 8);
  out[52] = '-';
  uint8_t f = sc->trace_flags & PERFC_TRACE_FLAG_SAMPLED;
  put_hex(out + 53, &f, 1);
  out[55] = '\0';
}

static int ts_keychar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-' || c == '*' || c == '/';
}

/* One list member's key: simple-key = lcalpha 0*255(keychar), or
 * multi-tenant tenant-id@system-id (lcalpha/digit 0*240 @ lcalpha 0*13). */
static int ts_key_valid(const char *k, size_t n) {
  if (n == 0)
    return 0;
  const char *at = memchr(k, '@', n);
  if (at == NULL) {
    if (!(k[0] >= 'a' && k[0] <= 'z') || n > 256)
      return 0;
    for (size_t i = 1; i < n; i++)
      if (!ts_keychar(k[i]))
        return 0;
    return 1;
  }
  size_t tn = (size_t)(at - k), sn = n - tn - 1;
  if (tn == 0 || tn > 241 || sn == 0 || sn > 14)
    return 0;
  if (!((k[0] >= 'a' && k[0] <= 'z') || (k[0] >= '0' && k[0] <= '9')))
    return 0;
  for (size_t i = 1; i < tn; i++)
    if (!ts_keychar(k[i]))
      return 0;
  if (!(at[1] >= 'a' && at[1] <= 'z'))
    return 0;
  for (size_t i = 2; i <= sn; i++)
    if (!ts_keychar(at[i]))
      return 0;
  return 1;
}

/* value = 0*255(chr) nblk-chr; chr = %x20 / nblk-chr;
 * nblk-chr = %x21-2B / %x2D-3C / %x3E-7E. */
static int ts_value_valid(const char *v, size_t n) {
  if (n == 0 || n > 256 || v[n - 1] == ' ')
    return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)v[i];
    if (c < 0x20 || c > 0x7e || c == ',' || c == '=')
      return 0;
  }
  return 1;
}

int perfc_tracestate_valid(const char *s, size_t len) {
  /* 512 bytes: the length every vendor must be able to propagate; longer
   * values are not passed on whole, and perfc does not truncate them. */
  if (s == NULL || len > 512)
    return 0;
  struct {
    const char *k;
    size_t n;
  } keys[32];
  size_t nkeys = 0, i = 0;
  while (i <= len) {
    size_t j = i;
    while (j < len && s[j] != ',')
      j++;
    /* one member between i and j, with optional spaces and tabs around */
    size_t a = i, b = j;
    while (a < b && (s[a] == ' ' || s[a] == '\t'))
      a++;
    while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t'))
      b--;
    if (b > a) {
      const char *eq = memchr(s + a, '=', b - a);
      if (eq == NULL)
        return 0;
      size_t kn = (size_t)(eq - (s + a));
      if (!ts_key_valid(s + a, kn) ||
          !ts_value_valid(eq + 1, (size_t)(s + b - (eq + 1))))
        return 0;
      if (nkeys == 32)
        return 0;
      for (size_t q = 0; q < nkeys; q++)
        if (keys[q].n == kn && memcmp(keys[q].k, s + a, kn) == 0)
          return 0;
      keys[nkeys].k = s + a;
      keys[nkeys].n = kn;
      nkeys++;
    }
    i = j + 1;
  }
  return 1;
}

/* ---- sampling ------------------------------------------------------------------ */

int perfc__tracing_sample(const perfc_tracer *tr,
                          const perfc_span_context *parent,
                          const uint8_t trace_id[16]) {
  if (tr->cfg.sampler == PERFC_SAMPLER_ALWAYS_ON)
    return 1;
  int parent_sampled =
      parent != NULL && (parent->trace_flags & PERFC_TRACE_FLAG_SAMPLED);
  /* TraceIdRatioBased as the Go and Java SDKs compute it: the low 8 bytes
   * of the trace id, big-endian, shifted to 63 bits, below ratio * 2^63.
   * Deterministic in the trace id, so every service with the same ratio
   * agrees on a trace. */
  uint64_t x = 0;
  for (int i = 8; i < 16; i++)
    x = x << 8 | trace_id[i];
  int ratio_ok = (x >> 1) < tr->ratio_bound;
  switch (tr->cfg.sampler) {
  case PERFC_SAMPLER_ALWAYS_ON:
    return 1;
  case PERFC_SAMPLER_ALWAYS_OFF:
    return 0;
  case PERFC_SAMPLER_TRACEIDRATIO:
    return ratio_ok;
  case PERFC_SAMPLER_PARENTBASED_ALWAYS_OFF:
    return parent ? parent_sampled : 0;
  case PERFC_SAMPLER_PARENTBASED_TRACEIDRATIO:
    return parent ? parent_sampled : ratio_ok;
  case PERFC_SAMPLER_PARENTBASED_ALWAYS_ON:
  default:
    return parent ? parent_sampled : 1;
  }
}

/* ---- spans ---------------------------------------------------------------------- */

struct perfc_span {
  /* What the export queue gets, kept in its queued form while the span
   * runs, so the end copy is one struct copy plus the arrays and the
   * strings marked for copy: ids (in q; trace and span id in `sc`), kind,
   * status, name, status message, tracestate, start, attributes, events,
   * and the pre-encoded parts (q.pre: attrs[0..pre_n) as OTLP, and
   * q.pre_head: name and kind). Its strings may be slices here (not
   * NUL-terminated); q.end_unix_ns is set at the end. */
  perfc__qspan q;
  perfc_tracer *tr;
  perfc_arena *arena; /* attributes, events and copied strings */
  int owns_arena;     /* child and client spans; server spans use the call's */
  int recording;
  int ended;
  perfc_span_context sc;
  uint8_t name_copy, status_msg_copy; /* 0: the tracer's, never copied */
  const char *baggage; /* passed on only */
  size_t baggage_len;
  int64_t start_mono_ns;
  int user_attrs; /* the API set some: keys may repeat the interceptor's */
  /* Which attrs have strings the end copy must copy (a->copy != 0): bit i
   * for attrs[i], i < 64; copy_high when one at 64 or above has (then
   * every attribute is looked at). The copy visits only these, not every
   * attribute twice. */
  uint64_t copy_mask;
  int copy_high;
  int64_t msg_sent, msg_recv;
  /* Set by perfc_tracing_span_start_current(): the thread's slot before
   * this span became current, restored when it ends. */
  int made_current;
  perfc_trace_current prev;
};

static int64_t unix_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Fills a span's identity: a child of `parent` when given (same trace,
 * tracestate passed on), else a new trace; then the sampling decision. */
static void span_init(perfc_span *s, perfc_tracer *tr,
                      const perfc_span_context *parent) {
  s->tr = tr;
  if (parent != NULL) {
    memcpy(s->sc.trace_id, parent->trace_id, 16);
    memcpy(s->q.parent_id, parent->span_id, 8);
    s->q.has_parent = 1;
  } else {
    new_trace_id(s->sc.trace_id);
  }
  new_span_id(s->sc.span_id);
  s->recording = perfc__tracing_sample(tr, parent, s->sc.trace_id);
  s->sc.trace_flags = s->recording ? PERFC_TRACE_FLAG_SAMPLED : 0;
  s->sc.remote = 0;
}

/* The wall clock as the monotonic clock plus an offset read on this
 * thread at most once a second (an "anchored" clock, as the Java SDK
 * does per trace): a span's start and end then cost no clock read of
 * their own beyond the monotonic one the call already made, and its
 * duration is exact. A step of the wall clock (NTP) shows in timestamps
 * within the second. */
#define ANCHOR_NS 1000000000
static _Thread_local struct {
  int64_t mono, offset;
} anchor __attribute__((tls_model("initial-exec")));

static int64_t unix_from_mono(int64_t mono) {
  /* Either side of the anchor: a call that started before the anchor was
   * read (another call's span read it meanwhile) uses it too. */
  int64_t d = mono - anchor.mono;
  if (anchor.mono == 0 || d >= ANCHOR_NS || d <= -ANCHOR_NS) {
    int64_t m = perfc__now_ns();
    anchor.offset = unix_now_ns() - m;
    anchor.mono = m;
  }
  return mono + anchor.offset;
}

static void span_start_clock(perfc_span *s, int64_t start_mono_ns) {
  s->start_mono_ns = start_mono_ns ? start_mono_ns : perfc__now_ns();
  s->q.start_unix_ns = unix_from_mono(s->start_mono_ns);
}

static inline void mark_copy(perfc_span *s, uint32_t i, uint8_t copy) {
  if (i >= 64)
    s->copy_high |= copy != 0;
  else if (copy)
    s->copy_mask |= (uint64_t)1 << i;
  else
    s->copy_mask &= ~((uint64_t)1 << i);
}

/* Sets an attribute; `dedup` looks for the key among those set, so a key
 * set twice keeps its last value, as the API specification asks. The
 * interceptors' own keys are distinct, so they skip the search unless the
 * application has set attributes of its own (attr_own). Lengths come with
 * the strings; `copy` says which the end copy must copy (PERFC__COPY_*). */
static void attr_set(perfc_span *s, const char *key, uint32_t klen, int type,
                     const char *sv, uint32_t vlen, int64_t iv, uint8_t copy,
                     int dedup) {
  if (!s->recording || s->ended)
    return;
  unsigned cap = s->tr->cfg.max_attrs;
  if (s->q.attrs == NULL) {
    s->q.attrs = perfc_arena_alloc(s->arena, cap * sizeof *s->q.attrs);
    if (s->q.attrs == NULL) {
      s->q.dropped_attrs++;
      return;
    }
  }
  perfc__attr *a = NULL;
  for (uint32_t i = 0; dedup && i < s->q.nattrs; i++)
    if (s->q.attrs[i].klen == klen && memcmp(s->q.attrs[i].key, key, klen) == 0) {
      a = &s->q.attrs[i];
      /* A pre-encoded attribute changes: the encoder must write it. */
      if (i < s->q.pre_n) {
        s->q.pre = NULL;
        s->q.pre_n = s->q.pre_len = 0;
      }
      break;
    }
  if (a == NULL) {
    if (s->q.nattrs >= cap) {
      s->q.dropped_attrs++;
      return;
    }
    a = &s->q.attrs[s->q.nattrs++];
  }
  a->key = key;
  a->klen = klen;
  a->type = (uint8_t)type;
  a->copy = copy;
  mark_copy(s, (uint32_t)(a - s->q.attrs), copy);
  a->vlen = 0;
  if (type == PERFC__ATTR_STR) {
    a->v.s = sv;
    a->vlen = vlen;
  } else {
    a->v.i = iv;
  }
}

/* A literal key: its length at compile time, never copied. */
#define LIT(k) (k), (uint32_t)(sizeof(k) - 1)

static void attr_own_str(perfc_span *s, const char *key, uint32_t klen,
                         const char *v, uint32_t vlen, uint8_t copy) {
  attr_set(s, key, klen, PERFC__ATTR_STR, v, vlen, 0, copy, s->user_attrs);
}

static void attr_own_int(perfc_span *s, const char *key, uint32_t klen,
                         int64_t v) {
  attr_set(s, key, klen, PERFC__ATTR_INT, NULL, 0, v, 0, s->user_attrs);
}

static void event_add(perfc_span *s, const char *name, uint32_t name_len,
                      int name_copy, const char *msg_type, int64_t msg_id) {
  if (!s->recording || s->ended)
    return;
  unsigned cap = s->tr->cfg.max_events;
  if (s->q.nevents >= cap) {
    s->q.dropped_events++;
    return;
  }
  if (s->q.events == NULL) {
    s->q.events = perfc_arena_alloc(s->arena, cap * sizeof *s->q.events);
    if (s->q.events == NULL) {
      s->q.dropped_events++;
      return;
    }
  }
  perfc__event *e = &s->q.events[s->q.nevents++];
  e->time_unix_ns = unix_from_mono(perfc__now_ns()); /* the span's clock */
  e->name = name;
  e->name_len = name_len;
  e->name_copy = (uint8_t)name_copy;
  e->msg_type = msg_type;
  e->msg_id = msg_id;
}

void perfc_span_set_attr_str(perfc_span *s, const char *key, const char *value) {
  if (s == NULL || key == NULL || value == NULL || !s->recording)
    return;
  size_t kn = strlen(key), vn = strlen(value);
  char *k = kn < UINT32_MAX ? perfc_arena_strndup(s->arena, key, kn) : NULL;
  char *v = vn < UINT32_MAX ? perfc_arena_strndup(s->arena, value, vn) : NULL;
  if (k == NULL || v == NULL) {
    s->q.dropped_attrs++;
    return;
  }
  s->user_attrs = 1;
  attr_set(s, k, (uint32_t)kn, PERFC__ATTR_STR, v, (uint32_t)vn, 0,
           PERFC__COPY_KEY | PERFC__COPY_VAL, 1);
}

void perfc_span_set_attr_int(perfc_span *s, const char *key, int64_t value) {
  if (s == NULL || key == NULL || !s->recording)
    return;
  size_t kn = strlen(key);
  char *k = kn < UINT32_MAX ? perfc_arena_strndup(s->arena, key, kn) : NULL;
  if (k == NULL) {
    s->q.dropped_attrs++;
    return;
  }
  s->user_attrs = 1;
  attr_set(s, k, (uint32_t)kn, PERFC__ATTR_INT, NULL, 0, value,
           PERFC__COPY_KEY, 1);
}

void perfc_span_add_event(perfc_span *s, const char *name) {
  if (s == NULL || name == NULL || !s->recording)
    return;
  size_t nn = strlen(name);
  char *n = nn < UINT32_MAX ? perfc_arena_strndup(s->arena, name, nn) : NULL;
  if (n == NULL) {
    s->q.dropped_events++;
    return;
  }
  event_add(s, n, (uint32_t)nn, 1, NULL, 0);
}

void perfc_span_set_status(perfc_span *s, perfc_span_status status,
                           const char *message) {
  if (s == NULL || !s->recording || s->ended ||
      (unsigned)status > PERFC_SPAN_STATUS_ERROR)
    return;
  s->q.status = status;
  s->q.status_msg = NULL;
  s->q.status_msg_len = 0;
  s->status_msg_copy = 1;
  if (status == PERFC_SPAN_STATUS_ERROR && message != NULL) {
    size_t n = strlen(message);
    s->q.status_msg = n < UINT32_MAX ? perfc_arena_strndup(s->arena, message, n)
                                   : NULL;
    s->q.status_msg_len = s->q.status_msg ? (uint32_t)n : 0;
  }
}

int perfc_span_recording(const perfc_span *s) { return s != NULL && s->recording; }

void perfc_span_get_context(const perfc_span *s, perfc_span_context *out) {
  if (s == NULL || out == NULL)
    return;
  *out = s->sc;
}

/* The first attribute at or after `i` that may have strings to copy;
 * s->nattrs when none. */
static inline uint32_t next_copy(const perfc_span *s, uint32_t i) {
  if (s->copy_high)
    return i; /* rare: every one is looked at */
  uint64_t m = i < 64 ? s->copy_mask >> i : 0;
  uint32_t k = m ? i + (uint32_t)__builtin_ctzll(m) : s->q.nattrs;
  return k < s->q.nattrs ? k : s->q.nattrs;
}

/* The size of the one copy a span makes when it ends: struct, arrays and
 * the strings marked for copy, in a single block. Lengths are known: no
 * string is measured here. */
static size_t span_flat_size(const perfc_span *s) {
  size_t strs = 0;
  if (s->name_copy)
    strs += s->q.name_len + 1;
  if (s->q.status_msg && s->status_msg_copy)
    strs += s->q.status_msg_len + 1;
  if (s->q.tracestate)
    strs += s->q.tracestate_len + 1;
  for (uint32_t i = next_copy(s, 0); i < s->q.nattrs; i = next_copy(s, i + 1)) {
    const perfc__attr *a = &s->q.attrs[i];
    if (a->copy & PERFC__COPY_KEY)
      strs += a->klen + 1;
    if (a->copy & PERFC__COPY_VAL)
      strs += a->vlen + 1;
  }
  for (uint32_t i = 0; i < s->q.nevents; i++)
    if (s->q.events[i].name_copy)
      strs += s->q.events[i].name_len + 1;
  return sizeof(perfc__qspan) + s->q.nattrs * sizeof(perfc__attr) +
         s->q.nevents * sizeof(perfc__event) + strs;
}

/* Copies n bytes of src to *p, NUL-terminates them, returns the copy. */
static const char *flat_str(char **p, const char *src, size_t n) {
  char *d = *p;
  memcpy(d, src, n);
  d[n] = '\0';
  *p = d + n + 1;
  return d;
}

/* The copy, into `mem` of span_flat_size(s) bytes: the arrays whole, then
 * only the strings that do not live as long as the tracer. */
static perfc__qspan *span_flatten(const perfc_span *s, int64_t end_unix_ns,
                                  void *mem) {
  perfc__qspan *q = mem;
  /* The span keeps its queued form: one struct copy, then what differs. */
  *q = s->q;
  memcpy(q->trace_id, s->sc.trace_id, 16);
  memcpy(q->span_id, s->sc.span_id, 8);
  q->flags = s->sc.trace_flags;
  q->end_unix_ns = end_unix_ns;
  q->attrs = (perfc__attr *)(q + 1);
  q->events = (perfc__event *)(q->attrs + s->q.nattrs);
  char *p = (char *)(q->events + s->q.nevents);
  if (s->name_copy)
    q->name = flat_str(&p, s->q.name, s->q.name_len);
  if (s->q.status_msg && s->status_msg_copy)
    q->status_msg = flat_str(&p, s->q.status_msg, s->q.status_msg_len);
  if (s->q.tracestate)
    q->tracestate = flat_str(&p, s->q.tracestate, s->q.tracestate_len);
  if (s->q.nattrs)
    memcpy(q->attrs, s->q.attrs, s->q.nattrs * sizeof *q->attrs);
  for (uint32_t i = next_copy(s, 0); i < s->q.nattrs; i = next_copy(s, i + 1)) {
    perfc__attr *a = &q->attrs[i];
    if (a->copy & PERFC__COPY_KEY)
      a->key = flat_str(&p, a->key, a->klen);
    if (a->copy & PERFC__COPY_VAL)
      a->v.s = flat_str(&p, a->v.s, a->vlen);
    a->copy = 0;
  }
  if (s->q.nevents)
    memcpy(q->events, s->q.events, s->q.nevents * sizeof *q->events);
  for (uint32_t i = 0; i < s->q.nevents; i++) {
    perfc__event *e = &q->events[i];
    if (e->name_copy)
      e->name = flat_str(&p, e->name, e->name_len);
    e->name_copy = 0;
  }
  return q;
}

/* Ends a span: sampled spans are copied into the export queue. The span's
 * own memory is its owner's to release. */
static void span_finish(perfc_span *s) {
  if (s->ended)
    return;
  s->ended = 1;
  if (!s->recording)
    return;
  int64_t end = s->q.start_unix_ns + (perfc__now_ns() - s->start_mono_ns);
  size_t size = span_flat_size(s), ticket;
  void *mem = perfc__tracing_claim(s->tr, size, &ticket);
  if (mem != NULL) {
    perfc__qspan *q = span_flatten(s, end, mem);
    if (s->tr->cfg.debug)
      perfc__tracing_debug_record(s->tr, q);
    perfc__tracing_publish(s->tr, ticket, q);
  } else if (s->tr->cfg.debug && (mem = malloc(size)) != NULL) {
    /* Dropped for export, still shown on /debug/traces. */
    perfc__tracing_debug_record(s->tr, span_flatten(s, end, mem));
    free(mem);
  }
}

/* A span with memory of its own (child and client spans). Non-recording
 * spans get no arena: they only carry ids. */
static perfc_span *span_new_owned(perfc_tracer *tr,
                                  const perfc_span_context *parent,
                                  const char *name, perfc_span_kind kind,
                                  int copy_name) {
  perfc_span *s = calloc(1, sizeof *s);
  if (s == NULL)
    return NULL;
  span_init(s, tr, parent);
  s->owns_arena = 1;
  s->q.kind = kind;
  if (s->recording) {
    if (perfc_arena_new(&s->arena, 1024) != 0) {
      free(s);
      return NULL;
    }
    size_t nn = strlen(name);
    s->q.name = copy_name ? perfc_arena_strndup(s->arena, name, nn) : name;
    s->q.name_len = (uint32_t)nn;
    /* Not the tracer's: copied when the span ends. */
    s->name_copy = 1;
    if (s->q.name == NULL || nn >= UINT32_MAX) {
      perfc_arena_free(s->arena);
      free(s);
      return NULL;
    }
    span_start_clock(s, 0);
  }
  return s;
}

static void span_free_owned(perfc_span *s) {
  perfc_arena_free(s->arena);
  free(s);
}

perfc_span *perfc_tracing_span_start_child(perfc_span *parent, const char *name,
                                           perfc_span_kind kind) {
  if (parent == NULL || name == NULL)
    return NULL;
  perfc_span *s = span_new_owned(parent->tr, &parent->sc, name, kind, 1);
  if (s != NULL && parent->q.tracestate) {
    /* The parent's strings outlive the child only while the parent runs;
     * a child that is exported copies them when it ends, which happens
     * before the parent ends for every span the data layer makes. */
    s->q.tracestate = parent->q.tracestate;
    s->q.tracestate_len = parent->q.tracestate_len;
  }
  return s;
}

void perfc_span_end(perfc_span *s) {
  if (s == NULL)
    return;
  if (!s->owns_arena) {
    /* A server span belongs to its call; the interceptor ends it. */
    return;
  }
  if (s->made_current)
    perfc_trace_current_set(&s->prev);
  span_finish(s);
  span_free_owned(s);
}

perfc_span *perfc_tracing_span_start_current(const char *name,
                                             perfc_span_kind kind) {
  perfc_trace_current cur;
  /* An unsampled call gets no child objects at all: nobody would see them,
   * and the data layer calls this on every operation. */
  if (name == NULL || !perfc_trace_current_get(&cur) ||
      !(cur.sc.trace_flags & PERFC_TRACE_FLAG_SAMPLED))
    return NULL;
  perfc_span *s = span_new_owned(cur.tracer, &cur.sc, name, kind, 1);
  if (s == NULL)
    return NULL;
  s->made_current = 1;
  s->prev = cur;
  perfc_trace_current next = {.tracer = cur.tracer, .sc = s->sc};
  perfc_trace_current_set(&next);
  return s;
}

/* Makes a server span the thread's current one (the hooks run on the
 * thread that works for the call at that moment: the poller, then the
 * worker the pool hands it to). */
static void set_current(perfc_span *s) {
  perfc_trace_current tc = {.tracer = s->tr, .sc = s->sc};
  perfc_trace_current_set(&tc);
}

/* ---- semantic conventions --------------------------------------------------------- */

/* OpenTelemetry's gRPC conventions: on the server, only codes that mean the
 * server failed are errors (a NOT_FOUND is a correct answer); on the
 * client every non-OK code is. */
static perfc_span_status grpc_span_status(perfc_status_code c, int server) {
  if (c == PERFC_STATUS_OK)
    return PERFC_SPAN_STATUS_UNSET;
  if (!server)
    return PERFC_SPAN_STATUS_ERROR;
  switch (c) {
  case PERFC_STATUS_UNKNOWN:
  case PERFC_STATUS_DEADLINE_EXCEEDED:
  case PERFC_STATUS_UNIMPLEMENTED:
  case PERFC_STATUS_INTERNAL:
  case PERFC_STATUS_UNAVAILABLE:
  case PERFC_STATUS_DATA_LOSS:
    return PERFC_SPAN_STATUS_ERROR;
  default:
    return PERFC_SPAN_STATUS_UNSET;
  }
}

/* Splits a gRPC peer or target ("ipv4:127.0.0.1:5000",
 * "ipv6:%5B::1%5D:5000", "ipv6:[::1]:5000", "dns:///host:443",
 * "host:443", "ipv4:a:1,b:2") into an address of `*alen` bytes and a port
 * (-1 when none). Returns 1 when the address is a slice of `in` (not
 * NUL-terminated), 0 when it is a NUL-terminated copy in `a` or NULL. */
static int split_hostport(perfc_arena *a, const char *in, const char **addr,
                          uint32_t *alen, int64_t *port) {
  *addr = NULL;
  *alen = 0;
  *port = -1;
  if (in == NULL || *in == '\0')
    return 0;
  if (strncmp(in, "ipv4:", 5) == 0) {
    /* A server's peer is almost always "ipv4:A.B.C.D:PORT": one scan and
     * one copy. Anything else (a list, escapes, a sign) takes the general
     * path below, which gives the same answer for this form. */
    const char *h = in + 5, *colon = NULL, *q = h;
    for (; *q; q++) {
      if (*q == ':') {
        if (colon != NULL)
          break;
        colon = q;
      } else if (*q == ',' || *q == '%') {
        break;
      }
    }
    if (*q == '\0' && colon != NULL && q - colon >= 2 && q - colon <= 6) {
      long v = 0;
      const char *d = colon + 1;
      for (; d < q && *d >= '0' && *d <= '9'; d++)
        v = v * 10 + (*d - '0');
      if (d == q && v <= 65535) {
        *addr = h;
        *alen = (uint32_t)(colon - h);
        *port = v;
        return 1;
      }
    }
  }
  const char *s = in;
  if (strncmp(s, "dns:", 4) == 0) {
    s += 4;
    if (strncmp(s, "//", 2) == 0) { /* dns://authority/host */
      const char *slash = strchr(s + 2, '/');
      s = slash ? slash + 1 : s + 2;
    }
  } else if (strncmp(s, "ipv4:", 5) == 0 || strncmp(s, "ipv6:", 5) == 0) {
    s += 5;
  } else if (strncmp(s, "unix:", 5) == 0) {
    *addr = perfc_arena_strdup(a, s + 5);
    *alen = *addr ? (uint32_t)strlen(*addr) : 0;
    return 0;
  }
  size_t n = strcspn(s, ","); /* the first of a list */
  char *buf = perfc_arena_strndup(a, s, n);
  if (buf == NULL)
    return 0;
  /* undo the core's URI escaping of brackets */
  char *w = buf;
  for (char *r = buf; *r; r++) {
    if (r[0] == '%' && r[1] == '5' && (r[2] == 'B' || r[2] == 'b')) {
      *w++ = '[';
      r += 2;
    } else if (r[0] == '%' && r[1] == '5' && (r[2] == 'D' || r[2] == 'd')) {
      *w++ = ']';
      r += 2;
    } else {
      *w++ = *r;
    }
  }
  *w = '\0';
  char *host = buf, *portp = NULL;
  if (buf[0] == '[') {
    char *close = strchr(buf, ']');
    if (close != NULL) {
      *close = '\0';
      host = buf + 1;
      if (close[1] == ':')
        portp = close + 2;
    }
  } else {
    char *colon = strrchr(buf, ':');
    /* one colon: host:port; more: a bare IPv6 address */
    if (colon != NULL && strchr(buf, ':') == colon) {
      *colon = '\0';
      portp = colon + 1;
    }
  }
  *addr = host;
  *alen = (uint32_t)strlen(host);
  if (portp != NULL && *portp) {
    char *end;
    long v = strtol(portp, &end, 10);
    if (*end == '\0' && v >= 0 && v <= 65535)
      *port = v;
  }
  return 0;
}

/* The last peer this thread split, when its address was a slice of it:
 * a thread serves calls from few connections, and the same peer string
 * splits the same way, so a repeat costs a compare instead of a scan. */
#define PEER_MEMO_BYTES 48
static _Thread_local struct {
  char s[PEER_MEMO_BYTES];
  uint32_t n, off, len;
  int64_t port;
} peer_memo __attribute__((tls_model("initial-exec")));

/* The server's peer as network.peer.address (a slice of `peer`, or a copy
 * in `a`) and port. */
static void split_peer(perfc_arena *a, const char *peer, const char **addr,
                       uint32_t *alen, int64_t *port) {
  size_t n = peer ? strlen(peer) : 0;
  if (n != 0 && n == peer_memo.n && memcmp(peer, peer_memo.s, n) == 0) {
    *addr = peer + peer_memo.off;
    *alen = peer_memo.len;
    *port = peer_memo.port;
    return;
  }
  int slice = split_hostport(a, peer, addr, alen, port);
  if (slice && n < PEER_MEMO_BYTES) {
    memcpy(peer_memo.s, peer, n);
    peer_memo.n = (uint32_t)n;
    peer_memo.off = (uint32_t)(*addr - peer);
    peer_memo.len = *alen;
    peer_memo.port = *port;
  }
}

/* Strings the tracer keeps until it is freed (method names): a queued span
 * points at them instead of copying them when it ends. */
struct perfc__istr {
  struct perfc__istr *next;
  size_t len;
  char s[];
};

static const char *intern(perfc_tracer *tr, const char *s, size_t n) {
  pthread_mutex_lock(&tr->intern_mu);
  struct perfc__istr *i;
  for (i = tr->interned; i != NULL; i = i->next)
    if (i->len == n && memcmp(i->s, s, n) == 0)
      break;
  if (i == NULL && (i = malloc(sizeof *i + n + 1)) != NULL) {
    memcpy(i->s, s, n);
    i->s[n] = '\0';
    i->len = n;
    i->next = tr->interned;
    tr->interned = i;
  }
  pthread_mutex_unlock(&tr->intern_mu);
  return i ? i->s : NULL;
}

static void interned_free(perfc_tracer *tr) {
  struct perfc__istr *i = tr->interned, *next;
  for (; i != NULL; i = next) {
    next = i->next;
    free(i);
  }
  tr->interned = NULL;
}

/* ---- server interceptor ---------------------------------------------------------- */

/* A status message that lives forever (perfc_status_name's). */
static void status_msg_static(perfc_span *s, const char *msg) {
  s->q.status_msg = msg;
  s->q.status_msg_len = (uint32_t)strlen(msg);
  s->status_msg_copy = 0;
}

typedef struct method_info {
  perfc_tracer *tr;
  /* The tracer's (interned): valid in queued spans after the server is
   * freed. */
  const char *name;    /* "pkg.Svc/Method" (the span name) */
  const char *service; /* "pkg.Svc" */
  const char *method;  /* "Method" */
  uint32_t name_len, service_len, method_len;
  int streaming;
  /* rpc.system, rpc.service and rpc.method as encoded OTLP attributes
   * (interned): every span of the method has them, so the exporter copies
   * these bytes instead of encoding three KeyValues per span. */
  const uint8_t *pre;
  uint32_t pre_len;
  /* The span's name and kind (SERVER), encoded once the same way. */
  const uint8_t *pre_head;
  uint32_t pre_head_len;
} method_info;

/* A server span's first three attributes, the same for every call of the
 * method (srv_before writes them, perfc__otlp_attrs_encode pre-encodes
 * them). */
static void method_attrs(const method_info *mi, perfc__attr at[3]) {
  static const char sys[] = "rpc.system", svc[] = "rpc.service",
                    mth[] = "rpc.method";
  at[0] = (perfc__attr){.key = sys, .klen = sizeof sys - 1,
                        .type = PERFC__ATTR_STR, .v.s = "grpc", .vlen = 4};
  at[1] = (perfc__attr){.key = svc, .klen = sizeof svc - 1,
                        .type = PERFC__ATTR_STR, .v.s = mi->service,
                        .vlen = mi->service_len};
  at[2] = (perfc__attr){.key = mth, .klen = sizeof mth - 1,
                        .type = PERFC__ATTR_STR, .v.s = mi->method,
                        .vlen = mi->method_len};
}

static void *srv_method_init(void *self, const perfc_service_desc *svc,
                             const perfc_method_desc *m) {
  perfc_tracer *tr = self;
  method_info *mi = calloc(1, sizeof *mi);
  if (mi == NULL)
    return NULL;
  mi->tr = tr;
  const char *path = m->path[0] == '/' ? m->path + 1 : m->path;
  size_t pn = strlen(path), sn = strlen(svc->name), mn = strlen(m->name);
  mi->name = intern(tr, path, pn);
  mi->service = intern(tr, svc->name, sn);
  mi->method = intern(tr, m->name, mn);
  mi->name_len = (uint32_t)pn;
  mi->service_len = (uint32_t)sn;
  mi->method_len = (uint32_t)mn;
  mi->streaming = m->kind != PERFC_METHOD_UNARY;
  if (mi->name == NULL || mi->service == NULL || mi->method == NULL ||
      pn >= UINT32_MAX || sn >= UINT32_MAX || mn >= UINT32_MAX) {
    free(mi);
    return NULL;
  }
  perfc__attr fixed[3];
  method_attrs(mi, fixed);
  size_t plen = 0;
  uint8_t *pre = perfc__otlp_attrs_encode(fixed, 3, &plen);
  /* Without it (no memory) the spans are encoded attribute by attribute. */
  if (pre != NULL && plen < UINT32_MAX) {
    mi->pre = (const uint8_t *)intern(tr, (const char *)pre, plen);
    mi->pre_len = mi->pre ? (uint32_t)plen : 0;
  }
  free(pre);
  pre = perfc__otlp_head_encode(mi->name, mi->name_len, PERFC_SPAN_SERVER, &plen);
  if (pre != NULL && plen < UINT32_MAX) {
    mi->pre_head = (const uint8_t *)intern(tr, (const char *)pre, plen);
    mi->pre_head_len = mi->pre_head ? (uint32_t)plen : 0;
  }
  free(pre);
  return mi;
}

static void srv_method_free(void *self, void *state) {
  (void)self;
  free(state); /* its strings are the tracer's */
}

/* Incoming trace context, in one walk over the request metadata:
 * a valid traceparent, with its tracestate when that is valid too (W3C:
 * no tracestate without a valid traceparent), and the baggage to pass on.
 * The values are slices borrowed from the call (not NUL-terminated); the
 * first of a repeated key counts. Returns 1 when there is a parent. */
static int incoming_parent(perfc_ctx *ctx, perfc_span_context *parent,
                           const char **ts, size_t *tslen, const char **bg,
                           size_t *bglen) {
  perfc_slice tp = {0}, tsv = {0}, bgv = {0};
  size_t n = perfc_ctx_metadata_count(ctx);
  for (size_t i = 0; i < n; i++) {
    perfc_slice k, v;
    if (perfc_ctx_metadata_at(ctx, i, &k, &v) != 0)
      break;
    if (k.len == 11 && tp.base == NULL && memcmp(k.base, "traceparent", 11) == 0)
      tp = v;
    else if (k.len == 10 && tsv.base == NULL &&
             memcmp(k.base, "tracestate", 10) == 0)
      tsv = v;
    else if (k.len == 7 && bgv.base == NULL && memcmp(k.base, "baggage", 7) == 0)
      bgv = v;
  }
  /* W3C Baggage: at most 8192 bytes are propagated. */
  if (bg != NULL && bgv.base != NULL && bgv.len > 0 && bgv.len <= 8192) {
    *bg = (const char *)bgv.base;
    *bglen = bgv.len;
  }
  if (tp.base == NULL ||
      perfc_traceparent_parse((const char *)tp.base, tp.len, parent) != 0)
    return 0;
  if (ts != NULL && tsv.base != NULL && tsv.len > 0 &&
      perfc_tracestate_valid((const char *)tsv.base, tsv.len)) {
    *ts = (const char *)tsv.base;
    *tslen = tsv.len;
  }
  return 1;
}

#define ATTR_STR(k, val, vl, cp)                                               \
  (perfc__attr) {                                                              \
    .key = (k), .klen = (uint32_t)(sizeof(k) - 1), .type = PERFC__ATTR_STR,    \
    .copy = (cp), .vlen = (vl), .v.s = (val)                                   \
  }
#define ATTR_INT(k, val)                                                       \
  (perfc__attr) {                                                              \
    .key = (k), .klen = (uint32_t)(sizeof(k) - 1), .type = PERFC__ATTR_INT,    \
    .v.i = (val)                                                               \
  }

static perfc_status_code srv_before(void *self, void *method_state,
                                    perfc_ctx *ctx, void **call_state) {
  perfc_tracer *tr = self;
  method_info *mi = method_state;
  if (tr->fast_off || mi == NULL)
    return PERFC_STATUS_OK;
  perfc_arena *a = perfc_ctx_arena(ctx);
  perfc_span *s = perfc_arena_calloc(a, sizeof *s);
  if (s == NULL)
    return PERFC_STATUS_OK; /* tracing never fails a call */
  perfc_span_context parent;
  const char *ts = NULL, *bg = NULL;
  size_t tslen = 0, bglen = 0;
  int has = incoming_parent(ctx, &parent, &ts, &tslen, &bg, &bglen);
  span_init(s, tr, has ? &parent : NULL);
  s->arena = a;
  s->q.kind = PERFC_SPAN_SERVER;
  s->q.name = mi->name;
  s->q.name_len = mi->name_len;
  s->q.pre_head = mi->pre_head;
  s->q.pre_head_len = mi->pre_head_len;
  s->q.tracestate = ts;
  s->q.tracestate_len = (uint32_t)tslen; /* <= 512: validated */
  s->baggage = bg;
  s->baggage_len = bglen;
  if (s->recording) {
    span_start_clock(s, perfc_ctx_start_ns(ctx));
    /* The peer only for a sampled span: the core transport makes a copy
     * of it per call when first asked. */
    const char *addr;
    uint32_t alen;
    int64_t port;
    split_peer(a, perfc_ctx_peer(ctx), &addr, &alen, &port);
    /* The interceptor's first attributes, written in place: the span is
     * new (no key to look for) and max_attrs >= 8 leaves room for all. */
    perfc__attr *at = perfc_arena_alloc(a, tr->cfg.max_attrs * sizeof *at);
    uint32_t n = 0;
    if (at != NULL) {
      method_attrs(mi, at);
      n = 3;
      s->q.pre = mi->pre;
      s->q.pre_len = mi->pre_len;
      s->q.pre_n = mi->pre ? 3 : 0;
      /* A slice of the peer, or a copy in the call's arena: either way
       * copied when the span ends. */
      if (addr != NULL) {
        s->copy_mask |= (uint64_t)1 << n; /* n < 8 */
        at[n++] = ATTR_STR("network.peer.address", addr, alen, PERFC__COPY_VAL);
      }
      if (port >= 0)
        at[n++] = ATTR_INT("network.peer.port", port);
      s->q.attrs = at;
      s->q.nattrs = n;
    } else {
      s->q.dropped_attrs = 3 + (addr != NULL) + (port >= 0);
    }
  }
  *call_state = s;
  set_current(s);
  return PERFC_STATUS_OK;
}

static void srv_on_message(void *self, void *method_state, perfc_ctx *ctx,
                           void *call_state, int sent) {
  (void)self;
  (void)ctx;
  method_info *mi = method_state;
  perfc_span *s = call_state;
  /* Unary calls: nothing to do. `before` made the span current on the
   * thread that decodes the request, and perfc_pool_submit() carries it
   * to the worker a pool handler runs on; message events on a unary call
   * would say nothing the span does not. */
  if (s == NULL || mi == NULL || !mi->streaming)
    return;
  /* A stream's message read by its handler's thread (a worker). */
  if (!sent)
    set_current(s);
  if (!s->recording)
    return;
  if (sent)
    event_add(s, LIT("message"), 0, "SENT", ++s->msg_sent);
  else
    event_add(s, LIT("message"), 0, "RECEIVED", ++s->msg_recv);
}

static void srv_after(void *self, void *method_state, perfc_ctx *ctx,
                      void *call_state, perfc_status_code code) {
  (void)self;
  (void)method_state;
  (void)ctx;
  perfc_span *s = call_state;
  if (s == NULL)
    return;
  perfc_trace_current_set(NULL);
  if (!s->recording)
    return;
  if (!s->user_attrs && s->q.attrs != NULL && s->q.nattrs < s->tr->cfg.max_attrs)
    /* The interceptor's own key, on a span only it wrote: no search. */
    s->q.attrs[s->q.nattrs++] = ATTR_INT("rpc.grpc.status_code", (int64_t)code);
  else
    attr_own_int(s, LIT("rpc.grpc.status_code"), (int64_t)code);
  s->q.status = grpc_span_status(code, 1);
  if (s->q.status == PERFC_SPAN_STATUS_ERROR)
    status_msg_static(s, perfc_status_name(code));
  span_finish(s);
}

/* Servers a tracer was ever attached to in this process (never lowered:
 * a server's interceptors live as long as it does, and a stale non-zero
 * only costs the lookup it skips). */
static atomic_uint servers_traced;

perfc_span *perfc_tracing_ctx_span(perfc_ctx *ctx) {
  /* No tracer attached to any server (the usual case with tracing off):
   * no call has a span, and the metrics interceptor asks on every call. */
  if (ctx == NULL || atomic_load_explicit(&servers_traced,
                                          memory_order_relaxed) == 0)
    return NULL;
  return perfc__ctx_call_state(ctx, srv_before);
}

int perfc_tracing_ctx_span_context(perfc_ctx *ctx, perfc_span_context *out) {
  if (ctx == NULL || out == NULL)
    return PERFC_EINVAL;
  perfc_span *s = perfc_tracing_ctx_span(ctx);
  if (s != NULL) {
    *out = s->sc;
    return 0;
  }
  /* No span object (always_off): the caller's trace goes on through this
   * server with an id for the unrecorded server span. */
  perfc_span_context p;
  if (!incoming_parent(ctx, &p, NULL, NULL, NULL, NULL))
    return PERFC_ENOENT;
  *out = p;
  new_span_id(out->span_id);
  out->trace_flags = 0;
  out->remote = 0;
  return 0;
}

int perfc_tracing_attach(perfc_tracer *tr, perfc_server *srv) {
  if (tr == NULL || srv == NULL)
    return PERFC_EINVAL;
  /* always_off: the server hook would do nothing for any call, so it is
   * not installed (a server then pays nothing per call); a handler's
   * outgoing call still continues the caller's trace
   * (perfc_tracing_ctx_span_context reads the request metadata). */
  if (tr->cfg.disabled || tr->fast_off)
    return 0;
  atomic_fetch_add_explicit(&servers_traced, 1, memory_order_relaxed);
  perfc_server_interceptor ic = {
      .name = "tracing",
      .self = tr,
      .method_init = srv_method_init,
      .method_free = srv_method_free,
      .before = srv_before,
      .on_message = srv_on_message,
      .after = srv_after,
  };
  return perfc_server_add_interceptor(srv, &ic);
}

/* ---- client interceptor ---------------------------------------------------------- */

typedef struct client_call {
  perfc_span *span; /* owned; ended in `after` */
  char traceparent[PERFC_TRACEPARENT_LEN + 1];
  char *tracestate; /* copied: an async call may outlive its parent */
  char *baggage;
} client_call;

static size_t cli_outgoing(void *self, const perfc_client_call_info *info,
                           void **call_state, perfc_metadata *md, size_t cap) {
  perfc_tracer *tr = self;
  if (tr->cfg.disabled || cap < 3)
    return 0;
  perfc_span *ps = info->parent ? perfc_tracing_ctx_span(info->parent) : NULL;
  perfc_span_context pc;
  int has_parent = 0;
  if (ps != NULL) {
    pc = ps->sc;
    has_parent = 1;
  } else if (info->parent != NULL &&
             perfc_tracing_ctx_span_context(info->parent, &pc) == 0) {
    has_parent = 1;
  } else if (info->parent == NULL) {
    /* No parent named: the call continues the trace this thread works
     * for, if any (a handler's call, or one inside a data-layer span). */
    perfc_trace_current cur;
    if (perfc_trace_current_get(&cur) && cur.tracer == (void *)tr) {
      pc = cur.sc;
      has_parent = 1;
    }
  }
  const perfc_method_desc *m = info->method;
  const char *name = m->path[0] == '/' ? m->path + 1 : m->path;
  client_call *cc = calloc(1, sizeof *cc);
  if (cc == NULL)
    return 0;
  cc->span = span_new_owned(tr, has_parent ? &pc : NULL, name,
                            PERFC_SPAN_CLIENT, 0);
  if (cc->span == NULL) {
    free(cc);
    return 0;
  }
  perfc_span *s = cc->span;
  if (ps != NULL && ps->q.tracestate)
    cc->tracestate = strndup(ps->q.tracestate, ps->q.tracestate_len);
  if (ps != NULL && ps->baggage)
    cc->baggage = strndup(ps->baggage, ps->baggage_len);
  if (s->recording) {
    s->q.tracestate = cc->tracestate;
    s->q.tracestate_len = cc->tracestate ? (uint32_t)strlen(cc->tracestate) : 0;
    const char *slash = strchr(name, '/');
    attr_own_str(s, LIT("rpc.system"), "grpc", 4, 0);
    if (slash != NULL)
      attr_own_str(s, LIT("rpc.service"), name, (uint32_t)(slash - name),
                   PERFC__COPY_VAL);
    attr_own_str(s, LIT("rpc.method"), m->name, (uint32_t)strlen(m->name),
                 PERFC__COPY_VAL);
    const char *addr;
    uint32_t alen;
    int64_t port;
    split_hostport(s->arena, info->target, &addr, &alen, &port);
    if (addr != NULL)
      attr_own_str(s, LIT("server.address"), addr, alen, PERFC__COPY_VAL);
    if (port >= 0)
      attr_own_int(s, LIT("server.port"), port);
  }
  perfc_traceparent_format(&s->sc, cc->traceparent);
  size_t n = 0;
  md[n++] = (perfc_metadata){.key = "traceparent", .value = cc->traceparent};
  if (cc->tracestate)
    md[n++] = (perfc_metadata){.key = "tracestate", .value = cc->tracestate};
  if (cc->baggage)
    md[n++] = (perfc_metadata){.key = "baggage", .value = cc->baggage};
  *call_state = cc;
  return n;
}

static void cli_on_message(void *self, const perfc_method_desc *m,
                           void *call_state, int sent) {
  (void)self;
  client_call *cc = call_state;
  if (cc == NULL || m->kind == PERFC_METHOD_UNARY)
    return;
  perfc_span *s = cc->span;
  if (sent)
    event_add(s, LIT("message"), 0, "SENT", ++s->msg_sent);
  else
    event_add(s, LIT("message"), 0, "RECEIVED", ++s->msg_recv);
}

static void cli_after(void *self, const perfc_method_desc *m, void *call_state,
                      perfc_status_code code, int64_t elapsed_ns) {
  (void)self;
  (void)m;
  (void)elapsed_ns;
  client_call *cc = call_state;
  if (cc == NULL)
    return;
  perfc_span *s = cc->span;
  if (s->recording) {
    attr_own_int(s, LIT("rpc.grpc.status_code"), (int64_t)code);
    s->q.status = grpc_span_status(code, 0);
    if (s->q.status == PERFC_SPAN_STATUS_ERROR)
      status_msg_static(s, perfc_status_name(code));
  }
  span_finish(s);
  span_free_owned(s);
  free(cc->tracestate);
  free(cc->baggage);
  free(cc);
}

const perfc_client_interceptor *perfc_tracing_client_interceptor(perfc_tracer *tr) {
  return tr ? &tr->cic : NULL;
}

/* ---- configuration ----------------------------------------------------------------- */

void perfc_tracing_opts_init(perfc_tracing_opts *o) {
  memset(o, 0, sizeof *o);
  o->sampler_ratio = PERFC_DEFAULT_TRACING_SAMPLER_RATIO;
  o->max_queue_spans = PERFC_DEFAULT_TRACING_MAX_QUEUE_SPANS;
  o->max_export_batch_spans = PERFC_DEFAULT_TRACING_MAX_BATCH_SPANS;
  o->schedule_delay_ms = PERFC_DEFAULT_TRACING_SCHEDULE_DELAY_MS;
  o->export_timeout_ms = PERFC_DEFAULT_TRACING_EXPORT_TIMEOUT_MS;
  o->retry_initial_backoff_ms = PERFC_DEFAULT_TRACING_RETRY_INITIAL_BACKOFF_MS;
  o->retry_max_backoff_ms = PERFC_DEFAULT_TRACING_RETRY_MAX_BACKOFF_MS;
  o->retry_max_elapsed_ms = PERFC_DEFAULT_TRACING_RETRY_MAX_ELAPSED_MS;
  o->shutdown_grace_ms = PERFC_DEFAULT_TRACING_SHUTDOWN_GRACE_MS;
  o->max_events_per_span = PERFC_DEFAULT_TRACING_MAX_EVENTS;
  o->max_attributes_per_span = PERFC_DEFAULT_TRACING_MAX_ATTRIBUTES;
}

static const char *const sampler_names[] = {
    [PERFC_SAMPLER_ALWAYS_ON] = "always_on",
    [PERFC_SAMPLER_ALWAYS_OFF] = "always_off",
    [PERFC_SAMPLER_TRACEIDRATIO] = "traceidratio",
    [PERFC_SAMPLER_PARENTBASED_ALWAYS_ON] = "parentbased_always_on",
    [PERFC_SAMPLER_PARENTBASED_ALWAYS_OFF] = "parentbased_always_off",
    [PERFC_SAMPLER_PARENTBASED_TRACEIDRATIO] = "parentbased_traceidratio",
};

static const char *env(const perfc_tracing_opts *o, const char *name) {
  if (o->ignore_env)
    return NULL;
  const char *v = getenv(name);
  return v != NULL && *v != '\0' ? v : NULL;
}

static int pct_decode(char *s) {
  char *w = s;
  for (char *r = s; *r; r++) {
    if (*r == '%') {
      int h = isxdigit((unsigned char)r[1]) ? (isdigit((unsigned char)r[1]) ? r[1] - '0' : (tolower((unsigned char)r[1]) - 'a' + 10)) : -1;
      int l = isxdigit((unsigned char)r[2]) ? (isdigit((unsigned char)r[2]) ? r[2] - '0' : (tolower((unsigned char)r[2]) - 'a' + 10)) : -1;
      if (h < 0 || l < 0)
        return -1;
      *w++ = (char)(h << 4 | l);
      r += 2;
    } else {
      *w++ = *r;
    }
  }
  *w = '\0';
  return 0;
}

static char *trim(char *s) {
  while (*s == ' ' || *s == '\t')
    s++;
  char *e = s + strlen(s);
  while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
    *--e = '\0';
  return s;
}

/* Parses "k1=v1,k2=v2" (W3C Baggage syntax, %-encoded values, as
 * OTEL_RESOURCE_ATTRIBUTES and OTEL_EXPORTER_OTLP_HEADERS use) into
 * "k<sep>v\0k<sep>v\0\0". NULL on a malformed list. */
static char *kv_list(const char *in, const char *sep) {
  size_t cap = strlen(in) * 2 + 8;
  char *out = malloc(cap), *tmp = strdup(in);
  if (out == NULL || tmp == NULL) {
    free(out);
    free(tmp);
    return NULL;
  }
  size_t n = 0;
  char *save = NULL;
  for (char *item = strtok_r(tmp, ",", &save); item;
       item = strtok_r(NULL, ",", &save)) {
    char *eq = strchr(item, '=');
    if (eq == NULL)
      goto bad;
    *eq = '\0';
    char *k = trim(item), *v = trim(eq + 1);
    if (*k == '\0' || pct_decode(v) != 0)
      goto bad;
    for (char *c = k; *c; c++)
      if ((unsigned char)*c <= ' ' || *c == '"' || *c == ':' || *c == ';' ||
          *c == '\\' || (unsigned char)*c >= 0x7f)
        goto bad;
    for (char *c = v; *c; c++)
      if (*c == '\r' || *c == '\n' || *c == '\0')
        goto bad;
    n += (size_t)snprintf(out + n, cap - n, "%s%s%s", k, sep, v) + 1;
  }
  out[n] = '\0';
  free(tmp);
  return out;
bad:
  free(tmp);
  free(out);
  return NULL;
}

static int64_t env_ms(const perfc_tracing_opts *o, const char *name,
                      int64_t set, int64_t dflt) {
  if (set != 0)
    return set;
  const char *v = env(o, name);
  if (v != NULL) {
    char *end;
    long long x = strtoll(v, &end, 10);
    if (*end == '\0' && x > 0)
      return x;
    perfc_log(PERFC_LOG_WARN, "tracing: %s=%s is not a positive number; ignored",
              name, v);
  }
  return dflt;
}

static int resolve(perfc__tracing_cfg *c, const perfc_tracing_opts *o) {
  const char *v;
  memset(c, 0, sizeof *c);
  c->disabled = o->disabled;
  if ((v = env(o, "OTEL_SDK_DISABLED")) != NULL && strcasecmp(v, "true") == 0)
    c->disabled = 1;

  /* Sampler: the option, else OTEL_TRACES_SAMPLER[_ARG], else
   * parentbased_always_on. A bad variable is logged and ignored, as the
   * SDK specification asks; a bad option is an error. */
  c->ratio = 1.0;
  c->debug = o->debug_traces;
  c->debug_ring = o->debug_ring_spans ? o->debug_ring_spans
                                      : PERFC_DEFAULT_TRACING_DEBUG_RING_SPANS;
  if ((unsigned)o->sampler > PERFC_SAMPLER_PARENTBASED_TRACEIDRATIO)
    return perfc__fail(PERFC_EINVAL, "tracing: unknown sampler %d", (int)o->sampler);
  c->sampler = o->sampler;
  if (c->sampler != PERFC_SAMPLER_DEFAULT) {
    if (!(o->sampler_ratio >= 0.0 && o->sampler_ratio <= 1.0))
      return perfc__fail(PERFC_EINVAL,
                         "tracing: sampler_ratio %g is outside [0, 1]",
                         o->sampler_ratio);
    c->ratio = o->sampler_ratio;
  } else {
    c->sampler = PERFC_SAMPLER_PARENTBASED_ALWAYS_ON;
    if ((v = env(o, "OTEL_TRACES_SAMPLER")) != NULL) {
      int found = 0;
      for (int i = 1; i <= PERFC_SAMPLER_PARENTBASED_TRACEIDRATIO; i++)
        if (strcmp(v, sampler_names[i]) == 0) {
          c->sampler = (perfc_sampler)i;
          found = 1;
        }
      if (!found)
        perfc_log(PERFC_LOG_WARN,
                  "tracing: OTEL_TRACES_SAMPLER=%s is not a sampler perfc "
                  "knows; using parentbased_always_on", v);
    }
    if ((v = env(o, "OTEL_TRACES_SAMPLER_ARG")) != NULL &&
        (c->sampler == PERFC_SAMPLER_TRACEIDRATIO ||
         c->sampler == PERFC_SAMPLER_PARENTBASED_TRACEIDRATIO)) {
      char *end;
      double r = strtod(v, &end);
      if (*end == '\0' && r >= 0.0 && r <= 1.0)
        c->ratio = r;
      else
        perfc_log(PERFC_LOG_WARN,
                  "tracing: OTEL_TRACES_SAMPLER_ARG=%s is not a ratio in "
                  "[0, 1]; using 1", v);
    }
  }

  /* Resource */
  const char *ra = o->resource_attributes ? o->resource_attributes
                                          : env(o, "OTEL_RESOURCE_ATTRIBUTES");
  if (ra != NULL) {
    c->resource_attrs = kv_list(ra, "=");
    if (c->resource_attrs == NULL) {
      if (o->resource_attributes != NULL)
        return perfc__fail(PERFC_EINVAL,
                           "tracing: resource_attributes '%.80s' is not a "
                           "k=v,k=v list", ra);
      perfc_log(PERFC_LOG_WARN, "tracing: OTEL_RESOURCE_ATTRIBUTES is not a "
                                "k=v,k=v list; ignored");
    }
  }
  const char *sn = o->service_name ? o->service_name : env(o, "OTEL_SERVICE_NAME");
  if (sn == NULL && c->resource_attrs != NULL)
    for (const char *p = c->resource_attrs; *p; p += strlen(p) + 1)
      if (strncmp(p, "service.name=", 13) == 0)
        sn = p + 13;
  c->service_name = strdup(sn ? sn : "unknown_service");

  /* Exporter */
  if (o->endpoint != NULL) {
    c->endpoint = strdup(o->endpoint);
  } else if ((v = env(o, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) != NULL) {
    c->endpoint = strdup(v);
  } else if ((v = env(o, "OTEL_EXPORTER_OTLP_ENDPOINT")) != NULL) {
    size_t n = strlen(v);
    c->endpoint = malloc(n + 12);
    if (c->endpoint)
      snprintf(c->endpoint, n + 12, "%s%s", v,
               n > 0 && v[n - 1] == '/' ? "v1/traces" : "/v1/traces");
  } else {
    c->endpoint = strdup(PERFC_DEFAULT_TRACING_ENDPOINT);
  }
  if (c->service_name == NULL || c->endpoint == NULL)
    return PERFC_ENOMEM;
  if (strncmp(c->endpoint, "http://", 7) != 0 &&
      strncmp(c->endpoint, "https://", 8) != 0)
    return perfc__fail(PERFC_EINVAL,
                       "tracing: endpoint '%.80s' is not an http:// or "
                       "https:// URL", c->endpoint);
  const char *hd = o->headers ? o->headers : env(o, "OTEL_EXPORTER_OTLP_TRACES_HEADERS");
  if (hd == NULL)
    hd = env(o, "OTEL_EXPORTER_OTLP_HEADERS");
  if (hd != NULL) {
    c->headers = kv_list(hd, ": ");
    if (c->headers == NULL) {
      if (o->headers != NULL)
        return perfc__fail(PERFC_EINVAL, "tracing: headers is not a k=v,k=v list");
      perfc_log(PERFC_LOG_WARN, "tracing: OTEL_EXPORTER_OTLP_HEADERS is not a "
                                "k=v,k=v list; ignored");
    }
  }
  const char *cz = o->compression ? o->compression
                                  : env(o, "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION");
  if (cz == NULL)
    cz = env(o, "OTEL_EXPORTER_OTLP_COMPRESSION");
  /* Uncompressed by default: gzip (level 1) cost about 8,900 instructions
   * per span on the exporter thread, three times the encoding itself
   * (callgrind, bench/trace-cost); a collector beside the service (the
   * usual deployment) gains nothing from it. OTLP/HTTP makes
   * Content-Encoding: gzip optional; "gzip" turns it on for a collector
   * across a slow or metered link. */
  c->gzip = 0;
  if (cz != NULL) {
    if (strcmp(cz, "gzip") == 0)
      c->gzip = 1;
    else if (strcmp(cz, "none") != 0) {
      if (o->compression != NULL)
        return perfc__fail(PERFC_EINVAL,
                           "tracing: compression '%.20s' (gzip, none)", cz);
      perfc_log(PERFC_LOG_WARN, "tracing: OTLP compression %s unknown; none", cz);
    }
  }
  /* Sizes and times: an option, else OTEL_BSP_* / OTEL_EXPORTER_OTLP_*
   * (these options are set by _opts_init, so a variable applies only to an
   * option the caller zeroed). */
  c->max_queue = (size_t)env_ms(o, "OTEL_BSP_MAX_QUEUE_SIZE",
                                (int64_t)o->max_queue_spans,
                                PERFC_DEFAULT_TRACING_MAX_QUEUE_SPANS);
  c->max_batch = (size_t)env_ms(o, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
                                (int64_t)o->max_export_batch_spans,
                                PERFC_DEFAULT_TRACING_MAX_BATCH_SPANS);
  c->delay_ms = env_ms(o, "OTEL_BSP_SCHEDULE_DELAY", o->schedule_delay_ms,
                       PERFC_DEFAULT_TRACING_SCHEDULE_DELAY_MS);
  c->timeout_ms = env_ms(o, "OTEL_EXPORTER_OTLP_TIMEOUT", o->export_timeout_ms,
                         PERFC_DEFAULT_TRACING_EXPORT_TIMEOUT_MS);
  c->retry_initial_ms = o->retry_initial_backoff_ms > 0
                            ? o->retry_initial_backoff_ms
                            : PERFC_DEFAULT_TRACING_RETRY_INITIAL_BACKOFF_MS;
  c->retry_max_ms = o->retry_max_backoff_ms > 0
                        ? o->retry_max_backoff_ms
                        : PERFC_DEFAULT_TRACING_RETRY_MAX_BACKOFF_MS;
  c->retry_elapsed_ms = o->no_retry                   ? 0
                         : o->retry_max_elapsed_ms > 0 ? o->retry_max_elapsed_ms
                                                       : PERFC_DEFAULT_TRACING_RETRY_MAX_ELAPSED_MS;
  c->grace_ms = o->shutdown_grace_ms > 0 ? o->shutdown_grace_ms
                                         : PERFC_DEFAULT_TRACING_SHUTDOWN_GRACE_MS;
  c->max_events = o->max_events_per_span ? o->max_events_per_span
                                         : PERFC_DEFAULT_TRACING_MAX_EVENTS;
  c->max_attrs = o->max_attributes_per_span ? o->max_attributes_per_span
                                            : PERFC_DEFAULT_TRACING_MAX_ATTRIBUTES;
  if (c->max_queue > (1u << 24) || c->max_batch > c->max_queue ||
      c->max_events > 4096 || c->max_attrs > 1024 || c->max_attrs < 8)
    return perfc__fail(PERFC_EINVAL,
                       "tracing: queue %zu, batch %zu (at most the queue), "
                       "events %u (<= 4096) or attributes %u (8..1024) out "
                       "of range", c->max_queue, c->max_batch, c->max_events,
                       c->max_attrs);
  return 0;
}

static void cfg_free(perfc__tracing_cfg *c) {
  free(c->service_name);
  free(c->resource_attrs);
  free(c->endpoint);
  free(c->headers);
}

static perfc_counter *counter(perfc_metrics_family *f, const char *reason) {
  perfc_counter *c = NULL;
  const char *lv[] = {reason};
  if (f != NULL)
    perfc_counter_get(&c, f, reason ? lv : NULL);
  return c;
}

static int register_metrics(perfc_tracer *tr, perfc_metrics_registry *reg) {
  perfc_metrics_family_opts mo;
  perfc_metrics_family *exported = NULL, *dropped = NULL;
  perfc_metrics_family_opts_init(&mo);
  mo.name = "perfc_tracing_spans_exported_total";
  mo.help = "Spans the OTLP receiver accepted.";
  int rc = perfc_metrics_family_new(&exported, reg, PERFC_METRICS_COUNTER, &mo);
  if (rc != 0)
    return rc;
  static const char *const labels[] = {"reason"};
  perfc_metrics_family_opts_init(&mo);
  mo.name = "perfc_tracing_spans_dropped_total";
  mo.help = "Sampled spans not exported: queue_full (the export queue was "
            "full when the span ended), export_failed (refused, or retries "
            "ran out), shutdown (still queued when the shutdown grace ended).";
  mo.label_names = labels;
  mo.label_count = 1;
  rc = perfc_metrics_family_new(&dropped, reg, PERFC_METRICS_COUNTER, &mo);
  if (rc != 0)
    return rc;
  tr->m_exported = counter(exported, NULL);
  tr->m_drop_full = counter(dropped, "queue_full");
  tr->m_drop_export = counter(dropped, "export_failed");
  tr->m_drop_shutdown = counter(dropped, "shutdown");
  return tr->m_exported && tr->m_drop_full && tr->m_drop_export &&
                 tr->m_drop_shutdown
             ? 0
             : PERFC_ENOMEM;
}

int perfc_tracing_new(perfc_tracer **out, const perfc_tracing_opts *opts) {
  perfc_tracing_opts dflt;
  if (out == NULL)
    return PERFC_EINVAL;
  *out = NULL;
  if (opts == NULL) {
    perfc_tracing_opts_init(&dflt);
    opts = &dflt;
  }
  perfc_tracer *tr = calloc(1, sizeof *tr);
  if (tr == NULL)
    return PERFC_ENOMEM;
  pthread_mutex_init(&tr->intern_mu, NULL);
  int rc = resolve(&tr->cfg, opts);
  if (rc == 0)
    rc = register_metrics(tr, opts->registry);
  if (rc != 0) {
    cfg_free(&tr->cfg);
    pthread_mutex_destroy(&tr->intern_mu);
    free(tr);
    return rc;
  }
  tr->ratio_bound = tr->cfg.ratio >= 1.0
                        ? UINT64_MAX
                        : (uint64_t)(tr->cfg.ratio * 9223372036854775808.0);
  tr->fast_off = tr->cfg.sampler == PERFC_SAMPLER_ALWAYS_OFF;
  tr->cic = (perfc_client_interceptor){
      .name = "tracing",
      .self = tr,
      .on_message = cli_on_message,
      .after = cli_after,
      .outgoing_metadata = cli_outgoing,
  };
  if (!tr->cfg.disabled && (rc = perfc__tracing_export_start(tr)) != 0) {
    cfg_free(&tr->cfg);
    pthread_mutex_destroy(&tr->intern_mu);
    free(tr);
    return rc;
  }
  *out = tr;
  return 0;
}

void perfc_tracing_free(perfc_tracer *tr) {
  if (tr == NULL)
    return;
  if (!tr->cfg.disabled)
    perfc__tracing_export_stop(tr);
  perfc__tracing_debug_free(tr);
  interned_free(tr);
  pthread_mutex_destroy(&tr->intern_mu);
  cfg_free(&tr->cfg);
  free(tr);
}

void perfc_tracing_stats_get(perfc_tracer *tr, perfc_tracing_stats *out) {
  memset(out, 0, sizeof *out);
  if (tr == NULL)
    return;
  uint64_t full = atomic_load(&tr->dropped_full);
  out->dropped_queue_full = full;
  out->spans_ended = atomic_load(&tr->enq) + full;
  out->spans_exported = atomic_load(&tr->exported);
  out->dropped_export = atomic_load(&tr->dropped_export);
  out->export_requests = atomic_load(&tr->requests);
  out->export_retries = atomic_load(&tr->retries);
}

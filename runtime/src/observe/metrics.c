/*
 * metrics.c — the metrics registry: families, series, per-thread cells and
 * the Prometheus text renderer.
 *
 * Room: runtime/src/observe (metrics module). Public API in perfc/metrics.h;
 * design notes in docs/metrics.md.
 *
 * How the hot path stays free of locks and shared cache lines:
 *
 * Every counter, gauge and histogram series owns a small range of *cell
 * offsets* (one cell for a counter; an epoch tag and a delta for a gauge,
 * see the gauge section; one per bucket plus one for the sum for a
 * histogram). Offsets come from one process-wide space, shared by all
 * registries, because the per-thread storage below must be one TLS slot.
 * Each thread that updates a metric lazily gets its own table of cells,
 * chunked so that it grows without moving: table->chunks[off >> SHIFT]
 * points to CHUNK_CELLS cells the thread allocated itself. A thread writes
 * only its own cells, so an increment is a load, an add and a store to
 * memory no other thread writes: no atomic read-modify-write, no lock, no
 * cache line bouncing.
 *
 * A scrape sums, for each cell, a "retired" total plus every live thread's
 * cell. When a thread exits, a pthread key destructor folds its cells into
 * the retired totals and unlinks its table under g_lock, the same lock the
 * scrape holds while it walks the tables, so an exiting thread's counts are
 * seen exactly once: either in its table or in the retired totals.
 *
 * A series created after threads started simply takes fresh offsets; a
 * thread's first update to it allocates the chunk if needed (slow path,
 * once per thread per CHUNK_CELLS cells).
 */
#include "perfc/metrics.h"
#include "core/str_internal.h"
#include "core/clock_internal.h"
#include "core/error_internal.h"
#include "observe/metrics_internal.h"

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
/* initial-exec TLS is a single %fs-relative load instead of a call to
 * __tls_get_addr, which matters at ~2 ns per increment. libperfc is linked
 * at program start, not dlopen'ed, so the static TLS block has room. */
#define TLS_IE __attribute__((tls_model("initial-exec")))
#else
#define LIKELY(x) (x)
#define UNLIKELY(x) (x)
#define TLS_IE
#endif

#define CACHE_LINE 64

/* ---- the process-wide cell space ---------------------------------------- */

/* The cell, the chunk geometry and the per-thread chunk table are in
 * observe/metrics_internal.h, where libperfc's own per-call counters (the
 * gRPC server metrics) increment them inline. 1024 chunks of 1024 cells:
 * a million cells, far above what a service registers (a histogram with
 * default buckets takes 13). A thread that touches one metric pays one
 * 8 KiB chunk plus its 8 KiB chunk table. */
typedef perfc__cell cell_t;
#define CHUNK_SHIFT PERFC__CELL_CHUNK_SHIFT
#define CHUNK_CELLS (1u << CHUNK_SHIFT)
#define CHUNK_MASK (CHUNK_CELLS - 1)
#define MAX_CHUNKS PERFC__CELL_CHUNKS
#define MAX_CELLS (CHUNK_CELLS * MAX_CHUNKS)

/* How to fold a cell into the retired totals when its thread exits. A
 * gauge uses a pair of cells: an epoch tag, then a double delta (see the
 * gauge section below). */
enum { KIND_U64 = 0, KIND_F64 = 1, KIND_GTAG = 2, KIND_GDELTA = 3 };

/* A gauge cell's tag while its owner rewrites the pair; never a real epoch
 * (epochs are sequence numbers that would take centuries to get there). */
#define TAG_BUSY UINT64_MAX

typedef perfc__cell_table tls_table;

typedef struct cell_range {
  uint32_t off, len;
} cell_range;

/* g_lock guards the thread list, the retired totals, the kind map and the
 * allocator. It is never taken on the hot path. Lock order: a registry's
 * lock, then g_lock. */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static tls_table *g_threads;
static uint64_t *g_retired[MAX_CHUNKS]; /* counts of exited threads */
static uint8_t *g_kind[MAX_CHUNKS];     /* how to fold each cell */
static uint32_t g_next_cell;            /* bump pointer */
static cell_range *g_free_ranges;       /* released ranges, first fit */
static size_t g_nfree, g_capfree;

static pthread_once_t g_key_once = PTHREAD_ONCE_INIT;
static pthread_key_t g_key;
static int g_key_ok;

__thread perfc__cell_table *perfc__cell_tls TLS_IE;
#define t_table perfc__cell_tls
/* Where updates go when a thread cannot get cells (out of memory): the
 * update is lost instead of crashing, and the sink is per thread so even
 * that case writes no shared memory. */
static __thread cell_t t_sink[PERFC_METRICS_MAX_BUCKETS + 2] TLS_IE;

static double bits_to_f64(uint64_t u) {
  double d;
  memcpy(&d, &u, sizeof d);
  return d;
}

static uint64_t f64_to_bits(double d) {
  uint64_t u;
  memcpy(&u, &d, sizeof u);
  return u;
}

/* Folds an exiting thread's cells into the retired totals. Runs on the
 * exiting thread as its pthread key destructor. */
static void thread_exit_fold(void *arg) {
  tls_table *t = arg;
  pthread_mutex_lock(&g_lock);
  for (uint32_t ci = 0; ci < MAX_CHUNKS; ci++) {
    cell_t *c = atomic_load_explicit(&t->chunks[ci], memory_order_relaxed);
    if (!c)
      continue;
    /* A chunk exists only for offsets that were allocated, and allocation
     * creates g_retired/g_kind for the chunk first. */
    for (uint32_t j = 0; j < CHUNK_CELLS; j++) {
      uint64_t v = atomic_load_explicit(&c[j], memory_order_relaxed);
      if (g_kind[ci][j] == KIND_GTAG && j + 1 < CHUNK_CELLS) {
        /* A gauge's delta only counts for the epoch it is tagged with.
         * Epochs only grow: a newer tag replaces the retired pair, an
         * older one is already void (a set() came after it). */
        uint64_t d = atomic_load_explicit(&c[j + 1], memory_order_relaxed);
        if (v == g_retired[ci][j])
          g_retired[ci][j + 1] =
              f64_to_bits(bits_to_f64(g_retired[ci][j + 1]) + bits_to_f64(d));
        else if (v > g_retired[ci][j]) {
          g_retired[ci][j] = v;
          g_retired[ci][j + 1] = d;
        }
        j++;
        continue;
      }
      if (!v)
        continue;
      if (g_kind[ci][j] == KIND_F64)
        g_retired[ci][j] =
            f64_to_bits(bits_to_f64(g_retired[ci][j]) + bits_to_f64(v));
      else
        g_retired[ci][j] += v;
    }
  }
  if (t->prev)
    t->prev->next = t->next;
  else
    g_threads = t->next;
  if (t->next)
    t->next->prev = t->prev;
  pthread_mutex_unlock(&g_lock);
  for (uint32_t ci = 0; ci < MAX_CHUNKS; ci++)
    free(atomic_load_explicit(&t->chunks[ci], memory_order_relaxed));
  free(t);
  if (t_table == t)
    t_table = NULL;
}

static void key_init(void) {
  g_key_ok = pthread_key_create(&g_key, thread_exit_fold) == 0;
}

/* First update by this thread, or first touch of a chunk. */
cell_t *perfc__cells_slow(uint32_t off) {
  tls_table *t = t_table;
  if (!t) {
    pthread_once(&g_key_once, key_init);
    if (!g_key_ok)
      return t_sink;
    t = calloc(1, sizeof *t);
    if (!t)
      return t_sink;
    if (pthread_setspecific(g_key, t) != 0) {
      free(t);
      return t_sink;
    }
    pthread_mutex_lock(&g_lock);
    t->next = g_threads;
    if (g_threads)
      g_threads->prev = t;
    g_threads = t;
    pthread_mutex_unlock(&g_lock);
    t_table = t;
  }
  uint32_t ci = off >> CHUNK_SHIFT;
  cell_t *c = atomic_load_explicit(&t->chunks[ci], memory_order_relaxed);
  if (!c) {
    /* Cache-line aligned so that two threads' chunks never share a line. */
    c = aligned_alloc(CACHE_LINE, CHUNK_CELLS * sizeof(cell_t));
    if (!c)
      return t_sink;
    for (uint32_t j = 0; j < CHUNK_CELLS; j++)
      atomic_init(&c[j], 0);
    atomic_store_explicit(&t->chunks[ci], c, memory_order_release);
  }
  return c + (off & CHUNK_MASK);
}

/* The calling thread's cells starting at `off`. A series' range never
 * crosses a chunk boundary, so the range is contiguous. */
static inline cell_t *cells(uint32_t off) {
  tls_table *t = t_table;
  if (LIKELY(t != NULL)) {
    cell_t *c = atomic_load_explicit(&t->chunks[off >> CHUNK_SHIFT],
                                     memory_order_relaxed);
    if (LIKELY(c != NULL))
      return c + (off & CHUNK_MASK);
  }
  return perfc__cells_slow(off);
}

/* Single-writer updates: only the owning thread stores to its cells, so a
 * relaxed load and store (plain mov/add/mov on x86) is enough; the atomics
 * only make the concurrent reads by a scraper well defined. */
static inline void cell_add_u64(cell_t *c, uint64_t v) {
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v,
                        memory_order_relaxed);
}

static inline void cell_add_f64(cell_t *c, double v) {
  uint64_t old = atomic_load_explicit(c, memory_order_relaxed);
  atomic_store_explicit(c, f64_to_bits(bits_to_f64(old) + v),
                        memory_order_relaxed);
}

/* Makes sure the retired totals and kind map exist for chunk `ci`. */
static int chunk_meta_ensure(uint32_t ci) {
  if (!g_retired[ci]) {
    g_retired[ci] = calloc(CHUNK_CELLS, sizeof(uint64_t));
    if (!g_retired[ci])
      return PERFC_ENOMEM;
  }
  if (!g_kind[ci]) {
    g_kind[ci] = calloc(CHUNK_CELLS, 1);
    if (!g_kind[ci])
      return PERFC_ENOMEM;
  }
  return 0;
}

/* Allocates `len` cells, zeroed in every table: for a counter one integer
 * cell; for a histogram len-1 integer cells and a float sum; for a gauge a
 * tag and a delta. Caller holds g_lock. */
static int cells_alloc(perfc_metrics_type type, uint32_t len, uint32_t *out) {
  uint32_t off = UINT32_MAX;
  for (size_t i = 0; i < g_nfree; i++) {
    if (g_free_ranges[i].len >= len) {
      off = g_free_ranges[i].off;
      g_free_ranges[i].off += len;
      g_free_ranges[i].len -= len;
      if (g_free_ranges[i].len == 0)
        g_free_ranges[i] = g_free_ranges[--g_nfree];
      break;
    }
  }
  if (off == UINT32_MAX) {
    uint32_t start = g_next_cell;
    /* Keep a series within one chunk so the hot path resolves one base
     * pointer; the few cells skipped at a chunk's end are not reused. */
    if ((start & CHUNK_MASK) + len > CHUNK_CELLS)
      start = (start | CHUNK_MASK) + 1;
    if ((uint64_t)start + len > MAX_CELLS)
      return PERFC_ENOMEM;
    off = start;
    g_next_cell = start + len;
  }
  uint32_t ci = off >> CHUNK_SHIFT;
  int rc = chunk_meta_ensure(ci);
  if (rc) {
    /* Hand the range back so it is not lost. */
    if (g_nfree == g_capfree) {
      size_t cap = g_capfree ? g_capfree * 2 : 16;
      cell_range *r = realloc(g_free_ranges, cap * sizeof *r);
      if (!r)
        return rc; /* a few cells leak from the space; harmless */
      g_free_ranges = r;
      g_capfree = cap;
    }
    g_free_ranges[g_nfree++] = (cell_range){off, len};
    return rc;
  }
  uint8_t *kind = &g_kind[ci][off & CHUNK_MASK];
  for (uint32_t j = 0; j < len; j++)
    kind[j] = KIND_U64;
  if (type == PERFC_METRICS_HISTOGRAM)
    kind[len - 1] = KIND_F64;
  if (type == PERFC_METRICS_GAUGE) {
    kind[0] = KIND_GTAG;
    kind[1] = KIND_GDELTA;
  }
  *out = off;
  return 0;
}

/* Zeroes a range in every live table and the retired totals, and makes it
 * reusable. Caller holds g_lock; no thread may still update the series. */
static void cells_release(uint32_t off, uint32_t len) {
  uint32_t ci = off >> CHUNK_SHIFT, j0 = off & CHUNK_MASK;
  for (tls_table *t = g_threads; t; t = t->next) {
    cell_t *c = atomic_load_explicit(&t->chunks[ci], memory_order_acquire);
    if (c)
      for (uint32_t j = 0; j < len; j++)
        atomic_store_explicit(&c[j0 + j], 0, memory_order_relaxed);
  }
  memset(&g_retired[ci][j0], 0, len * sizeof(uint64_t));
  /* Released cells fold as plain zeros until they are allocated again, so
   * a stale gauge kind can never make the fold pair up unrelated cells. */
  memset(&g_kind[ci][j0], KIND_U64, len);
  if (g_nfree == g_capfree) {
    size_t cap = g_capfree ? g_capfree * 2 : 16;
    cell_range *r = realloc(g_free_ranges, cap * sizeof *r);
    if (!r)
      return; /* the range stays unused; harmless */
    g_free_ranges = r;
    g_capfree = cap;
  }
  g_free_ranges[g_nfree++] = (cell_range){off, len};
}

/* Sums a range over the retired totals and every live thread: the first
 * n_u64 cells as integers into u[], then n_f64 cells as doubles into f[].
 * Takes g_lock. */
static void cells_collect(uint32_t off, uint32_t n_u64, uint64_t *u,
                          uint32_t n_f64, double *f) {
  uint32_t ci = off >> CHUNK_SHIFT, j0 = off & CHUNK_MASK;
  pthread_mutex_lock(&g_lock);
  for (uint32_t j = 0; j < n_u64; j++)
    u[j] = g_retired[ci][j0 + j];
  for (uint32_t j = 0; j < n_f64; j++)
    f[j] = bits_to_f64(g_retired[ci][j0 + n_u64 + j]);
  for (tls_table *t = g_threads; t; t = t->next) {
    cell_t *c = atomic_load_explicit(&t->chunks[ci], memory_order_acquire);
    if (!c)
      continue;
    c += j0;
    for (uint32_t j = 0; j < n_u64; j++)
      u[j] += atomic_load_explicit(&c[j], memory_order_relaxed);
    for (uint32_t j = 0; j < n_f64; j++)
      f[j] += bits_to_f64(
          atomic_load_explicit(&c[n_u64 + j], memory_order_relaxed));
  }
  pthread_mutex_unlock(&g_lock);
}

/* ---- registry, families, series ----------------------------------------- */

/* One series. The first cache line holds what the hot path reads (and what
 * a gauge's set() writes); the struct is allocated cache-line aligned and
 * padded, so no other object shares that line. */
struct series {
  /* gauges: set() is a seqlock write of (gseq, gauge_bits); gseq is even
   * when stable and is the epoch per-thread deltas are tagged with. Read
   * on every gauge update, written only by set(). */
  _Alignas(CACHE_LINE) _Atomic uint64_t gseq;
  _Atomic uint64_t gauge_bits; /* gauges: the value set() last stored */
  uint32_t off;                /* first cell */
  uint32_t nb;                 /* histogram bounds */
  const double *bounds;        /* histogram bounds */
  /* cold: registration and rendering only */
  _Alignas(CACHE_LINE) perfc_metrics_family *fam;
  char **values; /* label values, one allocation with the strings */
  uint64_t hash;
  size_t seq; /* creation order, the sort's tie-break */
  perfc_metrics_value_fn fn;
  void *user_data;
  void (*free_fn)(void *);
  /* histograms: the latest exemplar per bucket (nb + 1), allocated on the
   * first perfc_histogram_observe_exemplar() */
  _Atomic(struct exemplar *) ex;
};

/* One bucket's latest exemplar. `busy` is a try-lock: an observation that
 * finds it taken skips its exemplar (a later call will leave one), so a
 * call never waits; a scrape spins briefly for it. */
struct exemplar {
  atomic_uint busy;
  uint32_t set;
  uint8_t trace_id[16];
  uint8_t span_id[8];
  double value;
  int64_t unix_ms;
};

/* The public series types are the internal one: a pointer to any of them
 * is a pointer to a struct series. */
struct perfc_counter {
  struct series s;
};
struct perfc_gauge {
  struct series s;
};
struct perfc_histogram {
  struct series s;
};

struct perfc_metrics_family {
  perfc_metrics_registry *reg;
  perfc_metrics_type type;
  char *name;
  char *help; /* "" when none */
  size_t nlabels;
  char **labels;
  double *bounds;
  size_t nb;
  struct series **series;
  size_t nseries, capseries;
};

struct perfc_metrics_registry {
  pthread_mutex_t lock;
  perfc_metrics_family **fams;
  size_t nfams, capfams;
  size_t seq;
};

/* The default registry is static so it needs no allocation and cannot fail;
 * it lives as long as the process. */
static perfc_metrics_registry g_default_registry = {PTHREAD_MUTEX_INITIALIZER,
                                                    NULL, 0, 0, 0};

static const double k_default_buckets[PERFC_DEFAULT_METRICS_BUCKET_COUNT] = {
    PERFC_DEFAULT_METRICS_BUCKETS};

void perfc_metrics_family_opts_init(perfc_metrics_family_opts *o) {
  memset(o, 0, sizeof *o);
}

perfc_metrics_registry *perfc_metrics_registry_default(void) {
  return &g_default_registry;
}

int perfc_metrics_registry_new(perfc_metrics_registry **out) {
  perfc_metrics_registry *r = calloc(1, sizeof *r);
  if (!r)
    return PERFC_ENOMEM;
  if (pthread_mutex_init(&r->lock, NULL) != 0) {
    free(r);
    return PERFC_ENOMEM;
  }
  *out = r;
  return 0;
}

static void series_free(struct series *s) {
  if (s->free_fn)
    s->free_fn(s->user_data);
  free(atomic_load(&s->ex));
  free(s->values);
  free(s);
}

static void family_free(perfc_metrics_family *f) {
  for (size_t i = 0; i < f->nseries; i++)
    series_free(f->series[i]);
  free(f->series);
  free(f->name);
  free(f->help);
  for (size_t i = 0; i < f->nlabels; i++)
    free(f->labels[i]);
  free(f->labels);
  free(f->bounds);
  free(f);
}

static uint32_t series_cells(const perfc_metrics_family *f) {
  switch (f->type) {
  case PERFC_METRICS_COUNTER:
    return 1;
  case PERFC_METRICS_HISTOGRAM:
    return (uint32_t)f->nb + 2;
  case PERFC_METRICS_GAUGE:
    return 2;
  default:
    return 0;
  }
}

void perfc_metrics_registry_free(perfc_metrics_registry *reg) {
  if (!reg || reg == &g_default_registry)
    return;
  /* Release all cell ranges first, under one g_lock, then free memory. */
  pthread_mutex_lock(&g_lock);
  for (size_t i = 0; i < reg->nfams; i++) {
    perfc_metrics_family *f = reg->fams[i];
    uint32_t n = series_cells(f);
    for (size_t k = 0; n && k < f->nseries; k++)
      if (!f->series[k]->fn)
        cells_release(f->series[k]->off, n);
  }
  pthread_mutex_unlock(&g_lock);
  for (size_t i = 0; i < reg->nfams; i++)
    family_free(reg->fams[i]);
  free(reg->fams);
  pthread_mutex_destroy(&reg->lock);
  free(reg);
}

/* Prometheus data model: metric names [a-zA-Z_:][a-zA-Z0-9_:]*. */
static int valid_metric_name(const char *s) {
  if (!s || !*s)
    return 0;
  for (const char *p = s; *p; p++) {
    char c = *p;
    int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
             c == ':' || (p != s && c >= '0' && c <= '9');
    if (!ok)
      return 0;
  }
  return 1;
}

/* Label names [a-zA-Z_][a-zA-Z0-9_]*; "__" prefixes are reserved for
 * Prometheus' internal use. */
static int valid_label_name(const char *s) {
  if (!s || !*s || (s[0] == '_' && s[1] == '_'))
    return 0;
  for (const char *p = s; *p; p++) {
    char c = *p;
    int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
             (p != s && c >= '0' && c <= '9');
    if (!ok)
      return 0;
  }
  return 1;
}

/* Prometheus rejects a whole scrape whose label values or HELP text are not
 * valid UTF-8, so bad bytes are refused at registration, where the caller
 * can see the error, rather than breaking every later scrape. */
static int valid_utf8(const char *str) {
  const unsigned char *s = (const unsigned char *)str;
  while (*s) {
    unsigned c = *s++;
    int n;
    unsigned min;
    if (c < 0x80)
      continue;
    if ((c & 0xe0) == 0xc0) {
      n = 1, min = 0x80, c &= 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2, min = 0x800, c &= 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      n = 3, min = 0x10000, c &= 0x07;
    } else {
      return 0;
    }
    for (int i = 0; i < n; i++, s++) {
      if ((*s & 0xc0) != 0x80)
        return 0;
      c = (c << 6) | (*s & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
      return 0; /* overlong, out of range, or a surrogate */
  }
  return 1;
}

/* A histogram "h" also writes samples named h_bucket, h_sum and h_count;
 * another family under one of those names would make two metrics share
 * sample names, which Prometheus rejects. */
static int suffix_collides(const char *hist, const char *other) {
  static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
  size_t n = strlen(hist);
  if (strncmp(hist, other, n) != 0)
    return 0;
  for (size_t i = 0; i < 3; i++)
    if (strcmp(other + n, suffixes[i]) == 0)
      return 1;
  return 0;
}

/* Checks buckets and normalizes them (defaults, trailing +Inf dropped). */
static int normalize_buckets(const perfc_metrics_family_opts *o,
                             const double **b, size_t *n) {
  if (!o->buckets || o->bucket_count == 0) {
    *b = k_default_buckets;
    *n = PERFC_DEFAULT_METRICS_BUCKET_COUNT;
    return 0;
  }
  size_t cnt = o->bucket_count;
  if (isinf(o->buckets[cnt - 1]) && o->buckets[cnt - 1] > 0)
    cnt--;
  if (cnt > PERFC_METRICS_MAX_BUCKETS)
    return perfc__fail(PERFC_EINVAL, "metrics: %s: %zu buckets, at most %d",
                       o->name, cnt, PERFC_METRICS_MAX_BUCKETS);
  for (size_t i = 0; i < cnt; i++) {
    if (!isfinite(o->buckets[i]) ||
        (i > 0 && !(o->buckets[i] > o->buckets[i - 1])))
      return perfc_error_set(PERFC_EINVAL, NULL, (long)i,
                             "metrics: %s: bucket %zu (%g) is not finite and "
                             "above the one before",
                             o->name, i, o->buckets[i]);
  }
  *b = o->buckets;
  *n = cnt;
  return 0;
}

/* Same definition as an existing family? Then registering again is a no-op
 * that returns it. */
static int family_same(const perfc_metrics_family *f, perfc_metrics_type type,
                       const char *help, const perfc_metrics_family_opts *o,
                       const double *b, size_t nb) {
  if (f->type != type || strcmp(f->help, help) != 0 ||
      f->nlabels != o->label_count)
    return 0;
  for (size_t i = 0; i < f->nlabels; i++)
    if (strcmp(f->labels[i], o->label_names[i]) != 0)
      return 0;
  if (type == PERFC_METRICS_HISTOGRAM) {
    if (f->nb != nb)
      return 0;
    for (size_t i = 0; i < nb; i++)
      if (f->bounds[i] != b[i])
        return 0;
  }
  return 1;
}

int perfc_metrics_family_new(perfc_metrics_family **out,
                             perfc_metrics_registry *reg,
                             perfc_metrics_type type,
                             const perfc_metrics_family_opts *o) {
  if (!reg)
    reg = &g_default_registry;
  if (!out || !o)
    return perfc__fail(PERFC_EINVAL, "metrics: NULL out or options");
  if (!valid_metric_name(o->name))
    return perfc__fail(PERFC_EINVAL, "metrics: \"%s\" is not a metric name",
                       o->name ? o->name : "(null)");
  if (type != PERFC_METRICS_COUNTER && type != PERFC_METRICS_GAUGE &&
      type != PERFC_METRICS_HISTOGRAM)
    return perfc__fail(PERFC_EINVAL, "metrics: %s: unknown type %d", o->name,
                       (int)type);
  if (o->label_count > PERFC_METRICS_MAX_LABELS ||
      (o->label_count && !o->label_names))
    return perfc__fail(PERFC_EINVAL, "metrics: %s: %zu labels, at most %d",
                       o->name, o->label_count, PERFC_METRICS_MAX_LABELS);
  for (size_t i = 0; i < o->label_count; i++) {
    bool dup = false;
    for (size_t k = 0; k < i; k++)
      dup |= o->label_names[i] != NULL &&
             strcmp(o->label_names[i], o->label_names[k]) == 0;
    if (!valid_label_name(o->label_names[i]) || dup ||
        (type == PERFC_METRICS_HISTOGRAM &&
         strcmp(o->label_names[i], "le") == 0))
      return perfc_error_set(
          PERFC_EINVAL, NULL, (long)i,
          "metrics: %s: label %zu \"%s\" is not a label name, is repeated, "
          "or is \"le\" on a histogram",
          o->name, i, o->label_names[i] ? o->label_names[i] : "(null)");
  }
  const double *b = NULL;
  size_t nb = 0;
  if (type == PERFC_METRICS_HISTOGRAM) {
    int rc = normalize_buckets(o, &b, &nb);
    if (rc)
      return rc;
  }
  const char *help = o->help ? o->help : "";
  if (!valid_utf8(help))
    return perfc__fail(PERFC_EINVAL, "metrics: %s: help is not UTF-8", o->name);

  pthread_mutex_lock(&reg->lock);
  for (size_t i = 0; i < reg->nfams; i++) {
    perfc_metrics_family *f = reg->fams[i];
    if ((f->type == PERFC_METRICS_HISTOGRAM &&
         suffix_collides(f->name, o->name)) ||
        (type == PERFC_METRICS_HISTOGRAM &&
         suffix_collides(o->name, f->name))) {
      pthread_mutex_unlock(&reg->lock);
      return perfc__fail(PERFC_EEXIST,
                         "metrics: %s collides with histogram samples of %s",
                         o->name, f->name);
    }
    if (strcmp(f->name, o->name) == 0) {
      int same = family_same(f, type, help, o, b, nb);
      pthread_mutex_unlock(&reg->lock);
      if (!same)
        return perfc__fail(PERFC_EEXIST,
                           "metrics: %s is already registered with another "
                           "type, help, labels or buckets",
                           o->name);
      *out = f;
      return 0;
    }
  }
  int rc = PERFC_ENOMEM;
  perfc_metrics_family *f = calloc(1, sizeof *f);
  if (!f)
    goto fail;
  f->reg = reg;
  f->type = type;
  f->name = perfc__strdup(o->name);
  f->help = perfc__strdup(help);
  if (!f->name || !f->help)
    goto fail;
  if (o->label_count) {
    f->labels = calloc(o->label_count, sizeof(char *));
    if (!f->labels)
      goto fail;
    f->nlabels = o->label_count;
    for (size_t i = 0; i < o->label_count; i++)
      if (!(f->labels[i] = perfc__strdup(o->label_names[i])))
        goto fail;
  }
  if (nb) {
    f->bounds = malloc(nb * sizeof(double));
    if (!f->bounds)
      goto fail;
    memcpy(f->bounds, b, nb * sizeof(double));
    f->nb = nb;
  }
  if (reg->nfams == reg->capfams) {
    size_t cap = reg->capfams ? reg->capfams * 2 : 16;
    perfc_metrics_family **p = realloc(reg->fams, cap * sizeof *p);
    if (!p)
      goto fail;
    reg->fams = p;
    reg->capfams = cap;
  }
  reg->fams[reg->nfams++] = f;
  pthread_mutex_unlock(&reg->lock);
  *out = f;
  return 0;
fail:
  pthread_mutex_unlock(&reg->lock);
  if (f)
    family_free(f);
  return perfc__fail(rc, "metrics: out of memory registering %s", o->name);
}

int perfc__metrics_family(perfc_metrics_family **out,
                          perfc_metrics_registry *reg, perfc_metrics_type type,
                          const char *name, const char *help,
                          const char *const *label_names, size_t label_count) {
  perfc_metrics_family_opts mo;
  perfc_metrics_family_opts_init(&mo);
  mo.name = name;
  mo.help = help;
  mo.label_names = label_names;
  mo.label_count = label_count;
  return perfc_metrics_family_new(out, reg, type, &mo);
}

static uint64_t hash_values(const perfc_metrics_family *f,
                            const char *const *v) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (size_t i = 0; i < f->nlabels; i++) {
    for (const unsigned char *p = (const unsigned char *)v[i]; *p; p++)
      h = (h ^ *p) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull; /* separator no value contains */
  }
  return h;
}

static struct series *find_series(const perfc_metrics_family *f,
                                  const char *const *v, uint64_t h) {
  for (size_t i = 0; i < f->nseries; i++) {
    struct series *s = f->series[i];
    if (s->hash != h)
      continue;
    size_t k = 0;
    while (k < f->nlabels && strcmp(s->values[k], v[k]) == 0)
      k++;
    if (k == f->nlabels)
      return s;
  }
  return NULL;
}

/* Allocates a series with copied label values; not yet linked. */
static struct series *series_new(perfc_metrics_family *f, const char *const *v,
                                 uint64_t h) {
  size_t sz =
      (sizeof(struct series) + CACHE_LINE - 1) / CACHE_LINE * CACHE_LINE;
  struct series *s = aligned_alloc(CACHE_LINE, sz);
  if (!s)
    return NULL;
  memset(s, 0, sizeof *s);
  atomic_init(&s->gseq, 0);
  atomic_init(&s->gauge_bits, f64_to_bits(0.0));
  size_t bytes = f->nlabels * sizeof(char *);
  for (size_t i = 0; i < f->nlabels; i++)
    bytes += strlen(v[i]) + 1;
  if (bytes) {
    s->values = malloc(bytes);
    if (!s->values) {
      free(s);
      return NULL;
    }
    char *p = (char *)(s->values + f->nlabels);
    for (size_t i = 0; i < f->nlabels; i++) {
      size_t n = strlen(v[i]) + 1;
      memcpy(p, v[i], n);
      s->values[i] = p;
      p += n;
    }
  }
  s->fam = f;
  s->hash = h;
  s->bounds = f->bounds;
  s->nb = (uint32_t)f->nb;
  return s;
}

/* Finds or creates the series for `v`. `fn` non-NULL asks for a new
 * callback series. */
static int series_get(struct series **out, perfc_metrics_family *f,
                      perfc_metrics_type want, const char *const *v,
                      perfc_metrics_value_fn fn, void *ud,
                      void (*free_fn)(void *)) {
  if (!out || !f)
    return perfc__fail(PERFC_EINVAL, "metrics: NULL out or family");
  if (f->type != want)
    return perfc__fail(PERFC_EINVAL, "metrics: %s is not a %s", f->name,
                       want == PERFC_METRICS_COUNTER ? "counter"
                       : want == PERFC_METRICS_GAUGE ? "gauge"
                                                     : "histogram");
  if (f->nlabels && !v)
    return perfc__fail(PERFC_EINVAL, "metrics: %s: %zu label values needed",
                       f->name, f->nlabels);
  for (size_t i = 0; i < f->nlabels; i++)
    if (!v[i] || !valid_utf8(v[i]))
      return perfc_error_set(PERFC_EINVAL, NULL, (long)i,
                             "metrics: %s: value of label %s is NULL or not "
                             "UTF-8",
                             f->name, f->labels[i]);
  uint64_t h = hash_values(f, v);
  perfc_metrics_registry *reg = f->reg;
  pthread_mutex_lock(&reg->lock);
  struct series *s = find_series(f, v, h);
  if (s) {
    pthread_mutex_unlock(&reg->lock);
    if (fn)
      return perfc__fail(PERFC_EEXIST, "metrics: %s: series exists already",
                         f->name);
    if (s->fn) /* a callback series has no value to update */
      return perfc__fail(PERFC_EINVAL,
                         "metrics: %s: series is computed by a callback",
                         f->name);
    *out = s;
    return 0;
  }
  if (f->nseries == f->capseries) {
    size_t cap = f->capseries ? f->capseries * 2 : 8;
    struct series **p = realloc(f->series, cap * sizeof *p);
    if (!p) {
      pthread_mutex_unlock(&reg->lock);
      return perfc__fail(PERFC_ENOMEM, "metrics: out of memory");
    }
    f->series = p;
    f->capseries = cap;
  }
  s = series_new(f, v, h);
  if (!s) {
    pthread_mutex_unlock(&reg->lock);
    return perfc__fail(PERFC_ENOMEM, "metrics: out of memory");
  }
  uint32_t n = series_cells(f);
  if (fn) {
    s->fn = fn;
    s->user_data = ud;
  } else if (n) {
    pthread_mutex_lock(&g_lock);
    int rc = cells_alloc(f->type, n, &s->off);
    pthread_mutex_unlock(&g_lock);
    if (rc) {
      pthread_mutex_unlock(&reg->lock);
      free(s->values);
      free(s);
      return rc;
    }
  }
  s->seq = reg->seq++;
  /* free_fn is set only once the series is linked, so a failed call never
   * calls it. */
  s->free_fn = free_fn;
  f->series[f->nseries++] = s;
  pthread_mutex_unlock(&reg->lock);
  *out = s;
  return 0;
}

int perfc_counter_get(perfc_counter **out, perfc_metrics_family *fam,
                      const char *const *label_values) {
  return series_get((struct series **)out, fam, PERFC_METRICS_COUNTER,
                    label_values, NULL, NULL, NULL);
}

int perfc_gauge_get(perfc_gauge **out, perfc_metrics_family *fam,
                    const char *const *label_values) {
  return series_get((struct series **)out, fam, PERFC_METRICS_GAUGE,
                    label_values, NULL, NULL, NULL);
}

int perfc_histogram_get(perfc_histogram **out, perfc_metrics_family *fam,
                        const char *const *label_values) {
  return series_get((struct series **)out, fam, PERFC_METRICS_HISTOGRAM,
                    label_values, NULL, NULL, NULL);
}

int perfc_metrics_family_add_func(perfc_metrics_family *fam,
                                  const char *const *label_values,
                                  perfc_metrics_value_fn fn, void *user_data,
                                  void (*free_fn)(void *user_data)) {
  if (!fam || !fn || fam->type == PERFC_METRICS_HISTOGRAM)
    return perfc__fail(PERFC_EINVAL, "metrics: a callback series needs a "
                                     "counter or gauge family and a function");
  struct series *s;
  return series_get(&s, fam, fam->type, label_values, fn, user_data, free_fn);
}

static int simple_new(struct series **out, perfc_metrics_registry *reg,
                      perfc_metrics_type type, const char *name,
                      const char *help, const double *b, size_t nb) {
  perfc_metrics_family_opts o;
  perfc_metrics_family_opts_init(&o);
  o.name = name;
  o.help = help;
  o.buckets = b;
  o.bucket_count = nb;
  perfc_metrics_family *f;
  int rc = perfc_metrics_family_new(&f, reg, type, &o);
  if (rc)
    return rc;
  return series_get(out, f, type, NULL, NULL, NULL, NULL);
}

int perfc_counter_new(perfc_counter **out, perfc_metrics_registry *reg,
                      const char *name, const char *help) {
  return simple_new((struct series **)out, reg, PERFC_METRICS_COUNTER, name,
                    help, NULL, 0);
}

int perfc_gauge_new(perfc_gauge **out, perfc_metrics_registry *reg,
                    const char *name, const char *help) {
  return simple_new((struct series **)out, reg, PERFC_METRICS_GAUGE, name, help,
                    NULL, 0);
}

int perfc_histogram_new(perfc_histogram **out, perfc_metrics_registry *reg,
                        const char *name, const char *help,
                        const double *buckets, size_t bucket_count) {
  return simple_new((struct series **)out, reg, PERFC_METRICS_HISTOGRAM, name,
                    help, buckets, bucket_count);
}

int perfc_gauge_func_new(perfc_metrics_registry *reg, const char *name,
                         const char *help, perfc_metrics_value_fn fn,
                         void *user_data) {
  perfc_metrics_family_opts o;
  perfc_metrics_family_opts_init(&o);
  o.name = name;
  o.help = help;
  perfc_metrics_family *f;
  int rc = perfc_metrics_family_new(&f, reg, PERFC_METRICS_GAUGE, &o);
  if (rc)
    return rc;
  return perfc_metrics_family_add_func(f, NULL, fn, user_data, NULL);
}

/* ---- hot path ------------------------------------------------------------ */

void perfc_counter_inc(perfc_counter *c) { cell_add_u64(cells(c->s.off), 1); }

uint32_t perfc__counter_cell(const perfc_counter *c) { return c->s.off; }

void perfc_counter_add(perfc_counter *c, uint64_t v) {
  cell_add_u64(cells(c->s.off), v);
}

/*
 * Gauges. A gauge needs set() as well as add(), and set() discards every
 * earlier add, so plain per-thread sums do not work. Instead:
 *
 *   value = base + sum of the per-thread deltas tagged with the current
 *           epoch
 *
 * where (epoch, base) is a seqlock in the series (gseq even = stable, and
 * gseq itself is the epoch). set() bumps gseq to odd, stores base, bumps it
 * to even: all earlier deltas carry an older tag and stop counting, with no
 * lock and no walk over threads. add() reads gseq (a line only set()
 * writes, so it stays shared in every core's cache) and updates the
 * thread's own (tag, delta) pair: if the tag is current it adds, otherwise
 * it restarts the pair at the new epoch. An add that races with a set()
 * either lands before it (and is discarded by it) or after it: each update
 * is atomic with respect to set().
 *
 * The pair is rewritten under a per-cell seqlock (tag = TAG_BUSY meanwhile)
 * so that a scraper never pairs one epoch's tag with another's delta.
 */

/* Spins politely: the other side holds no lock, it is between two stores,
 * but it may have been preempted there. */
static void spin_pause(unsigned *n) {
  if (++*n % 64 == 0)
    sched_yield();
}

void perfc_gauge_set(perfc_gauge *g, double v) {
  struct series *s = &g->s;
  uint64_t q = atomic_load_explicit(&s->gseq, memory_order_relaxed);
  unsigned n = 0;
  for (;;) {
    if (q & 1) { /* another set() is between its two stores */
      spin_pause(&n);
      q = atomic_load_explicit(&s->gseq, memory_order_relaxed);
      continue;
    }
    if (atomic_compare_exchange_weak_explicit(
            &s->gseq, &q, q + 1, memory_order_acquire, memory_order_relaxed))
      break;
  }
  /* Release on the value store, not a fence (TSan does not model fences):
   * a reader that acquires the new value also sees the odd gseq. */
  atomic_store_explicit(&s->gauge_bits, f64_to_bits(v), memory_order_release);
  atomic_store_explicit(&s->gseq, q + 2, memory_order_release);
}

void perfc_gauge_add(perfc_gauge *g, double v) {
  const struct series *s = &g->s;
  uint64_t epoch = atomic_load_explicit(&s->gseq, memory_order_acquire);
  cell_t *c = cells(s->off);
  if (LIKELY(atomic_load_explicit(&c[0], memory_order_relaxed) == epoch)) {
    cell_add_f64(&c[1], v);
    return;
  }
  /* First update in this epoch (or ever): restart the pair. An odd epoch
   * (a set() in progress) is a tag no reader counts, which orders this
   * add before that set(). */
  atomic_store_explicit(&c[0], TAG_BUSY, memory_order_relaxed);
  /* Release: whoever acquires the new delta also sees TAG_BUSY (or later),
   * so it cannot pair this delta with the old tag. On x86 these orders
   * cost nothing; they are plain stores. */
  atomic_store_explicit(&c[1], f64_to_bits(v), memory_order_release);
  atomic_store_explicit(&c[0], epoch, memory_order_release);
}

void perfc_gauge_inc(perfc_gauge *g) { perfc_gauge_add(g, 1.0); }

void perfc_gauge_dec(perfc_gauge *g) { perfc_gauge_add(g, -1.0); }

/* Reads a consistent (tag, delta) pair of another thread's gauge cells. */
static void gauge_pair_read(cell_t *c, uint64_t *tag, double *delta) {
  unsigned n = 0;
  for (;;) {
    uint64_t t1 = atomic_load_explicit(&c[0], memory_order_acquire);
    uint64_t d = atomic_load_explicit(&c[1], memory_order_acquire);
    uint64_t t2 = atomic_load_explicit(&c[0], memory_order_acquire);
    if (t1 == t2 && t1 != TAG_BUSY) {
      *tag = t1;
      *delta = bits_to_f64(d);
      return;
    }
    spin_pause(&n);
  }
}

/* The gauge's value: base plus the current epoch's deltas of the retired
 * totals and every live thread. Retried if a set() ran meanwhile, so base
 * and deltas always belong to one epoch. Takes g_lock (which neither set()
 * nor add() ever takes, so the spins cannot deadlock). */
static double gauge_read(const struct series *s) {
  uint32_t ci = s->off >> CHUNK_SHIFT, j = s->off & CHUNK_MASK;
  double v;
  unsigned n = 0;
  pthread_mutex_lock(&g_lock);
  for (;;) {
    uint64_t q = atomic_load_explicit(&s->gseq, memory_order_acquire);
    if (q & 1) {
      spin_pause(&n);
      continue;
    }
    v = bits_to_f64(atomic_load_explicit(&s->gauge_bits, memory_order_acquire));
    if (g_retired[ci][j] == q)
      v += bits_to_f64(g_retired[ci][j + 1]);
    for (tls_table *t = g_threads; t; t = t->next) {
      cell_t *c = atomic_load_explicit(&t->chunks[ci], memory_order_acquire);
      if (!c)
        continue;
      uint64_t tag;
      double d;
      gauge_pair_read(c + j, &tag, &d);
      if (tag == q)
        v += d;
    }
    /* The acquire loads above keep this load after them. A thread that
     * tagged a cell with a newer epoch read that epoch from gseq first, so
     * having seen its tag we see the newer gseq here and retry. */
    if (atomic_load_explicit(&s->gseq, memory_order_relaxed) == q)
      break;
  }
  pthread_mutex_unlock(&g_lock);
  return v;
}

static uint32_t bucket_of(const struct series *s, double v);

void perfc_histogram_observe(perfc_histogram *h, double v) {
  const struct series *s = &h->s;
  uint32_t nb = s->nb, i = bucket_of(s, v);
  cell_t *c = cells(s->off);
  cell_add_u64(&c[i], 1);
  cell_add_f64(&c[nb + 1], v);
}

/* Observations waiting for the end of this thread's batch: a loop's
 * histogram latencies, one clock reading for all (perfc__histogram_observe
 * _since). A batch with more calls than this observes the first 256 when
 * the 257th comes, ending them a little early (their answers are not
 * written yet): one clock reading per 256 calls still, in bounded memory. */
#define PENDING_MAX 256

typedef struct pending_obs {
  perfc_histogram *h;
  int64_t start_ns;
} pending_obs;

static __thread pending_obs t_pending[PENDING_MAX] TLS_IE;
static __thread unsigned t_npending TLS_IE;

/* The batch's end hook: registered by the first observation of a batch,
 * so t_npending > 0 means it is registered in the current one. */
static void pending_flush(int64_t now_ns) {
  unsigned n = t_npending;
  for (unsigned i = 0; i < n; i++)
    perfc_histogram_observe(t_pending[i].h,
                            (double)(now_ns - t_pending[i].start_ns) / 1e9);
  t_npending = 0;
}

void perfc__histogram_observe_since(perfc_histogram *h, int64_t start_ns) {
  unsigned n = t_npending;
  if (n == PENDING_MAX) {
    /* Still registered: the batch's end observes what comes after. */
    pending_flush(perfc__now_ns());
    n = 0;
  } else if (n == 0 && perfc__batch_at_end(pending_flush) != 0) {
    perfc_histogram_observe(h, (double)(perfc__now_ns() - start_ns) / 1e9);
    return;
  }
  t_pending[n].h = h;
  t_pending[n].start_ns = start_ns;
  t_npending = n + 1;
}

void perfc_histogram_observe_exemplar(perfc_histogram *h, double v,
                                      const perfc_span_context *sc) {
  perfc_histogram_observe(h, v);
  if (sc == NULL)
    return;
  struct series *s = &h->s;
  struct exemplar *ex = atomic_load_explicit(&s->ex, memory_order_acquire);
  if (ex == NULL) {
    struct exemplar *fresh = calloc(s->nb + 1, sizeof *fresh);
    if (fresh == NULL)
      return;
    if (!atomic_compare_exchange_strong(&s->ex, &ex, fresh))
      free(fresh); /* another thread installed its array: use that one */
    else
      ex = fresh;
  }
  struct exemplar *e = &ex[bucket_of(s, v)];
  if (atomic_exchange_explicit(&e->busy, 1, memory_order_acquire))
    return;
  memcpy(e->trace_id, sc->trace_id, 16);
  memcpy(e->span_id, sc->span_id, 8);
  e->value = v;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  e->unix_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  e->set = 1;
  atomic_store_explicit(&e->busy, 0, memory_order_release);
}

static uint32_t bucket_of(const struct series *s, double v) {
  const double *b = s->bounds;
  uint32_t nb = s->nb, i;
  /* The bucket is the first bound >= v (Prometheus "le"); `!(v <= b)`
   * sends NaN to +Inf as client_golang does. Linear for the usual dozen
   * bounds, where it beats a binary search's branch misses. */
  if (nb <= 16) {
    i = 0;
    while (i < nb && !(v <= b[i]))
      i++;
  } else {
    uint32_t lo = 0, hi = nb;
    while (lo < hi) {
      uint32_t mid = (lo + hi) / 2;
      if (v <= b[mid])
        hi = mid;
      else
        lo = mid + 1;
    }
    i = lo;
  }
  return i;
}

uint64_t perfc_counter_value(perfc_counter *c) {
  uint64_t v;
  cells_collect(c->s.off, 1, &v, 0, NULL);
  return v;
}

double perfc_gauge_value(perfc_gauge *g) { return gauge_read(&g->s); }

void perfc_histogram_value(perfc_histogram *h, uint64_t *count, double *sum) {
  uint64_t b[PERFC_METRICS_MAX_BUCKETS + 1];
  double s;
  cells_collect(h->s.off, h->s.nb + 1, b, 1, &s);
  uint64_t n = 0;
  for (uint32_t i = 0; i <= h->s.nb; i++)
    n += b[i];
  if (count)
    *count = n;
  if (sum)
    *sum = s;
}

/* ---- text exposition format 0.0.4 ---------------------------------------- */

typedef struct buf {
  char *p;
  size_t len, cap;
  int oom;
} buf;

static void buf_reserve(buf *b, size_t extra) {
  if (b->oom || b->len + extra + 1 <= b->cap)
    return;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < b->len + extra + 1)
    cap *= 2;
  char *p = realloc(b->p, cap);
  if (!p) {
    b->oom = 1;
    return;
  }
  b->p = p;
  b->cap = cap;
}

static void buf_put(buf *b, const char *s, size_t n) {
  buf_reserve(b, n);
  if (b->oom)
    return;
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void buf_puts(buf *b, const char *s) { buf_put(b, s, strlen(s)); }

/* Escapes for a label value (`\`, `"`, newline) or, with quote == 0, for
 * HELP text (`\`, newline), as the format specifies. */
static void buf_escaped(buf *b, const char *s, int quote) {
  const char *run = s;
  for (; *s; s++) {
    const char *rep = NULL;
    if (*s == '\\')
      rep = "\\\\";
    else if (*s == '\n')
      rep = "\\n";
    else if (quote && *s == '"')
      rep = "\\\"";
    if (rep) {
      buf_put(b, run, (size_t)(s - run));
      buf_put(b, rep, 2);
      run = s + 1;
    }
  }
  buf_put(b, run, (size_t)(s - run));
}

/* Formats a sample value the way Prometheus parses and prints it: NaN,
 * +Inf, -Inf; integral values without exponent or decimals (counts, bytes,
 * bucket bounds like 1 and 10); otherwise the shortest %g form that reads
 * back to the same double. */
static void fmt_double(char out[40], double v) {
  if (isnan(v)) {
    strcpy(out, "NaN");
  } else if (isinf(v)) {
    strcpy(out, v > 0 ? "+Inf" : "-Inf");
  } else if (v == floor(v) && fabs(v) < 1e15) {
    snprintf(out, 40, "%.0f", v);
  } else {
    for (int prec = 15; prec <= 17; prec++) {
      snprintf(out, 40, "%.*g", prec, v);
      if (strtod(out, NULL) == v)
        break;
    }
  }
}

static void buf_double(buf *b, double v) {
  char tmp[40];
  fmt_double(tmp, v);
  buf_puts(b, tmp);
}

static void buf_u64(buf *b, uint64_t v) {
  char tmp[24];
  int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
  buf_put(b, tmp, (size_t)n);
}

/* name{l1="v1",...[,le="x"]} — `le` NULL for non-bucket samples. */
static void buf_series_name(buf *b, const perfc_metrics_family *f,
                            const struct series *s, const char *suffix,
                            const char *le) {
  buf_puts(b, f->name);
  if (suffix)
    buf_puts(b, suffix);
  if (f->nlabels == 0 && !le) {
    buf_put(b, " ", 1);
    return;
  }
  buf_put(b, "{", 1);
  for (size_t i = 0; i < f->nlabels; i++) {
    if (i)
      buf_put(b, ",", 1);
    buf_puts(b, f->labels[i]);
    buf_put(b, "=\"", 2);
    buf_escaped(b, s->values[i], 1);
    buf_put(b, "\"", 1);
  }
  if (le) {
    if (f->nlabels)
      buf_put(b, ",", 1);
    buf_put(b, "le=\"", 4);
    buf_puts(b, le);
    buf_put(b, "\"", 1);
  }
  buf_put(b, "} ", 2);
}

static int cmp_family(const void *a, const void *b) {
  const perfc_metrics_family *x = *(perfc_metrics_family *const *)a;
  const perfc_metrics_family *y = *(perfc_metrics_family *const *)b;
  return strcmp(x->name, y->name);
}

static int cmp_series(const void *a, const void *b) {
  const struct series *x = *(struct series *const *)a;
  const struct series *y = *(struct series *const *)b;
  for (size_t i = 0; i < x->fam->nlabels; i++) {
    int c = strcmp(x->values[i], y->values[i]);
    if (c)
      return c;
  }
  /* Distinct series never compare equal, but keep the order total and
   * stable anyway. */
  return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* OpenMetrics: " # {trace_id="…",span_id="…"} value timestamp" after a
 * bucket sample that has an exemplar. */
static void buf_exemplar(buf *b, struct exemplar *e) {
  unsigned spins = 0;
  while (atomic_exchange_explicit(&e->busy, 1, memory_order_acquire))
    spin_pause(&spins);
  struct exemplar c = *e;
  atomic_store_explicit(&e->busy, 0, memory_order_release);
  if (!c.set)
    return;
  static const char hx[] = "0123456789abcdef";
  char ids[80];
  size_t n = 0;
  memcpy(ids, " # {trace_id=\"", 14);
  n = 14;
  for (int i = 0; i < 16; i++) {
    ids[n++] = hx[c.trace_id[i] >> 4];
    ids[n++] = hx[c.trace_id[i] & 15];
  }
  memcpy(ids + n, "\",span_id=\"", 11);
  n += 11;
  for (int i = 0; i < 8; i++) {
    ids[n++] = hx[c.span_id[i] >> 4];
    ids[n++] = hx[c.span_id[i] & 15];
  }
  memcpy(ids + n, "\"} ", 3);
  n += 3;
  buf_put(b, ids, n);
  buf_double(b, c.value);
  char ts[32];
  int tn = snprintf(ts, sizeof ts, " %lld.%03lld", (long long)(c.unix_ms / 1000),
                    (long long)(c.unix_ms % 1000));
  buf_put(b, ts, (size_t)tn);
}

/* The family's name as OpenMetrics' HELP and TYPE lines spell it: a
 * counter's without the `_total` its samples carry. */
static void buf_family_name(buf *b, const perfc_metrics_family *f, int om) {
  size_t n = strlen(f->name);
  if (om && f->type == PERFC_METRICS_COUNTER && n > 6 &&
      strcmp(f->name + n - 6, "_total") == 0)
    n -= 6;
  buf_put(b, f->name, n);
}

static void render_family(buf *b, perfc_metrics_family *f, int om) {
  static const char *type_names[] = {"counter", "gauge", "histogram"};
  if (f->nseries == 0)
    return; /* as client_golang: a family without series is not shown */
  /* OpenMetrics counters' samples end in _total (client_golang appends it
   * too when a counter's name lacks it). */
  const char *csuffix = NULL;
  size_t fl = strlen(f->name);
  if (om && f->type == PERFC_METRICS_COUNTER &&
      !(fl > 6 && strcmp(f->name + fl - 6, "_total") == 0))
    csuffix = "_total";
  if (f->help[0]) {
    buf_puts(b, "# HELP ");
    buf_family_name(b, f, om);
    buf_put(b, " ", 1);
    buf_escaped(b, f->help, 0);
    buf_put(b, "\n", 1);
  }
  buf_puts(b, "# TYPE ");
  buf_family_name(b, f, om);
  buf_put(b, " ", 1);
  buf_puts(b, type_names[f->type]);
  buf_put(b, "\n", 1);

  /* Sort in place: order only matters to renders, which hold the lock. */
  if (f->nseries > 1)
    qsort(f->series, f->nseries, sizeof *f->series, cmp_series);
  for (size_t i = 0; i < f->nseries; i++) {
    struct series *s = f->series[i];
    if (s->fn) {
      buf_series_name(b, f, s, csuffix, NULL);
      buf_double(b, s->fn(s->user_data));
    } else if (f->type == PERFC_METRICS_COUNTER) {
      uint64_t v;
      cells_collect(s->off, 1, &v, 0, NULL);
      buf_series_name(b, f, s, csuffix, NULL);
      buf_u64(b, v);
    } else if (f->type == PERFC_METRICS_GAUGE) {
      buf_series_name(b, f, s, NULL, NULL);
      buf_double(b, perfc_gauge_value((perfc_gauge *)s));
    } else {
      uint64_t cnt[PERFC_METRICS_MAX_BUCKETS + 1] = {0};
      double sum;
      cells_collect(s->off, s->nb + 1, cnt, 1, &sum);
      uint64_t cum = 0;
      for (uint32_t k = 0; k <= s->nb; k++) {
        char le[40];
        if (k < s->nb)
          fmt_double(le, s->bounds[k]);
        else
          strcpy(le, "+Inf");
        cum += cnt[k];
        buf_series_name(b, f, s, "_bucket", le);
        buf_u64(b, cum);
        struct exemplar *ex = om ? atomic_load(&s->ex) : NULL;
        if (ex != NULL)
          buf_exemplar(b, &ex[k]);
        buf_put(b, "\n", 1);
      }
      buf_series_name(b, f, s, "_sum", NULL);
      buf_double(b, sum);
      buf_put(b, "\n", 1);
      buf_series_name(b, f, s, "_count", NULL);
      buf_u64(b, cum);
    }
    buf_put(b, "\n", 1);
  }
}

static int render(perfc_metrics_registry *reg, char **out, size_t *out_len,
                  int om);

int perfc_metrics_registry_render(perfc_metrics_registry *reg, char **out,
                                  size_t *out_len) {
  return render(reg, out, out_len, 0);
}

int perfc_metrics_registry_render_openmetrics(perfc_metrics_registry *reg,
                                              char **out, size_t *out_len) {
  return render(reg, out, out_len, 1);
}

static int render(perfc_metrics_registry *reg, char **out, size_t *out_len,
                  int om) {
  if (!reg)
    reg = &g_default_registry;
  if (!out)
    return perfc__fail(PERFC_EINVAL, "metrics: NULL out");
  buf b = {0};
  buf_reserve(&b, 0);
  if (!b.oom)
    b.p[0] = '\0'; /* an empty registry renders as "" */
  pthread_mutex_lock(&reg->lock);
  if (reg->nfams > 1) /* qsort's base must not be NULL, even for 0 items */
    qsort(reg->fams, reg->nfams, sizeof *reg->fams, cmp_family);
  for (size_t i = 0; i < reg->nfams && !b.oom; i++)
    render_family(&b, reg->fams[i], om);
  pthread_mutex_unlock(&reg->lock);
  if (om)
    buf_puts(&b, "# EOF\n");
  if (b.oom) {
    free(b.p);
    return perfc__fail(PERFC_ENOMEM, "metrics: out of memory rendering");
  }
  *out = b.p;
  if (out_len)
    *out_len = b.len;
  return 0;
}

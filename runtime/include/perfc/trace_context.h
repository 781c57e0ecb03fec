/*
 * perfc/trace_context.h — the trace context a thread is working for: the
 * W3C ids of the current span, kept in a per-thread slot.
 *
 * The slot is how tracing reaches code that is not handed a call context:
 * the tracing interceptor (observe) fills it while a traced call's hooks
 * and handler run, the data layer opens child spans of it (Redis commands,
 * PostgreSQL statements, cache lookups), and the logger stamps every line
 * written inside a call with `trace_id` and `span_id`. It lives in core so
 * that the logger and the worker pool, which sit below observe, can read
 * and carry it without calling tracing: a job handed to a perfc_pool takes
 * the submitting thread's context with it.
 *
 * Room: runtime public headers (core). Values only, no pointer into a
 * call: a stale slot can mislabel, never dangle.
 */
#ifndef PERFC_TRACE_CONTEXT_H
#define PERFC_TRACE_CONTEXT_H

#include <stddef.h>
#include <stdint.h>

#include "perfc/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** W3C trace-flags bit 0: the caller recorded its span ("sampled"). */
#define PERFC_TRACE_FLAG_SAMPLED 0x01

/** What a span passes on to its children: W3C trace context. */
typedef struct perfc_span_context {
  uint8_t trace_id[16]; /**< never all zero when valid */
  uint8_t span_id[8];   /**< never all zero when valid */
  uint8_t trace_flags;  /**< PERFC_TRACE_FLAG_SAMPLED or 0 */
  uint8_t remote;       /**< 1 when parsed from a peer's traceparent */
} perfc_span_context;

/** The calling thread's current trace context. */
typedef struct perfc_trace_current {
  /** The perfc_tracer the span belongs to (opaque here); NULL: the slot is
   *  empty. Borrowed: a tracer outlives every call it traces. */
  void *tracer;
  perfc_span_context sc;
} perfc_trace_current;

/** Copies the calling thread's slot into `out`; returns 1 when it holds a
 *  span, else 0 (and `out->tracer` is NULL). */
PERFC_API int perfc_trace_current_get(perfc_trace_current *out);

/** Sets the calling thread's slot to `*tc` (copied), or empties it when
 *  `tc` is NULL or `tc->tracer` is NULL. */
PERFC_API void perfc_trace_current_set(const perfc_trace_current *tc);

/** Writes the current trace and span ids as lower-case hex (32 and 16
 *  characters plus a NUL) into `trace_hex` and `span_hex`; returns 1, or
 *  0 when the slot is empty (the buffers are then left alone). */
PERFC_API int perfc_trace_current_ids(char trace_hex[33], char span_hex[17]);

#ifdef __cplusplus
}
#endif
#endif /* PERFC_TRACE_CONTEXT_H */

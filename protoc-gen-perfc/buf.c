/*
 * buf.c — growable strings and the generator's allocation helpers.
 *
 * Room: protoc-gen-perfc (the generator). Process-local memory only.
 */
#include "buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void oom(void) {
  /* stdout carries the CodeGeneratorResponse, so the message goes to
   * stderr, which protoc shows to the user. */
  fputs("protoc-gen-perfc: out of memory\n", stderr);
  exit(1);
}

void *perfc__xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p)
    oom();
  return p;
}

void *perfc__xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (!p)
    oom();
  return p;
}

void *perfc__xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q)
    oom();
  return q;
}

char *perfc__xstrndup(const char *s, size_t n) {
  char *d = perfc__xmalloc(n + 1);
  memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

char *perfc__xstrdup(const char *s) { return perfc__xstrndup(s, strlen(s)); }

static void reserve(perfc__buf *b, size_t extra) {
  size_t need = b->len + extra + 1;
  if (need <= b->cap)
    return;
  size_t cap = b->cap ? b->cap : 64;
  while (cap < need)
    cap *= 2;
  b->data = perfc__xrealloc(b->data, cap);
  b->cap = cap;
}

void perfc__buf_append(perfc__buf *b, const char *s, size_t n) {
  reserve(b, n);
  if (n)
    memcpy(b->data + b->len, s, n);
  b->len += n;
  b->data[b->len] = '\0';
}

void perfc__buf_puts(perfc__buf *b, const char *s) {
  perfc__buf_append(b, s, strlen(s));
}

void perfc__buf_putc(perfc__buf *b, char c) { perfc__buf_append(b, &c, 1); }

void perfc__buf_vprintf(perfc__buf *b, const char *fmt, va_list ap) {
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap2);
  va_end(ap2);
  if (n < 0)
    return;
  reserve(b, (size_t)n);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  b->len += (size_t)n;
}

void perfc__buf_printf(perfc__buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  perfc__buf_vprintf(b, fmt, ap);
  va_end(ap);
}

char *perfc__buf_take(perfc__buf *b) {
  char *s = b->data ? b->data : perfc__xstrdup("");
  b->data = NULL;
  b->len = b->cap = 0;
  return s;
}

void perfc__buf_free(perfc__buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

char *perfc__xasprintf(const char *fmt, ...) {
  perfc__buf b = {0};
  va_list ap;
  va_start(ap, fmt);
  perfc__buf_vprintf(&b, fmt, ap);
  va_end(ap);
  return perfc__buf_take(&b);
}

/*
 * buf.h — growable byte buffers and allocation for protoc-gen-perfc.
 *
 * Room: protoc-gen-perfc (the generator). Used by every generator module;
 * touches nothing outside the process.
 */
#ifndef PERFC_GEN_BUF_H
#define PERFC_GEN_BUF_H

#include <stdarg.h>
#include <stddef.h>

/** A NUL-terminated growable string. Zero-initialised is empty and valid. */
typedef struct perfc__buf {
  char *data;
  size_t len;
  size_t cap;
} perfc__buf;

void perfc__buf_append(perfc__buf *b, const char *s, size_t n);
void perfc__buf_puts(perfc__buf *b, const char *s);
void perfc__buf_putc(perfc__buf *b, char c);
void perfc__buf_printf(perfc__buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void perfc__buf_vprintf(perfc__buf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
/** Hands the string to the caller (who frees it) and empties the buffer;
 *  never NULL. */
char *perfc__buf_take(perfc__buf *b);
void perfc__buf_free(perfc__buf *b);

/* The generator is a short-lived command: when memory runs out there is no
 * useful way to continue, so these print one line and exit(1) instead of
 * threading ENOMEM through every string operation. */
void *perfc__xmalloc(size_t n);
void *perfc__xcalloc(size_t n, size_t size);
void *perfc__xrealloc(void *p, size_t n);
char *perfc__xstrdup(const char *s);
char *perfc__xstrndup(const char *s, size_t n);
/** printf into a fresh malloc'd string. */
char *perfc__xasprintf(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

#endif /* PERFC_GEN_BUF_H */

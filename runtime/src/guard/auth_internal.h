/*
 * auth_internal.h — the JWT pieces below perfc_auth_verify(), shared by
 * jwt.c, auth.c, the unit tests and the fuzz targets. Never installed.
 *
 * Room: runtime/src/guard private header.
 */
#ifndef PERFC_AUTH_INTERNAL_H
#define PERFC_AUTH_INTERNAL_H

#include "perfc/auth.h"

/* Kinds of a top-level JSON member; nested objects and arrays holding
 * anything but strings are validated and skipped (JV_OTHER). */
typedef enum {
  JV_STRING,
  JV_NUMBER,
  JV_BOOL,
  JV_NULL,
  JV_STR_ARRAY,
  JV_OTHER
} jv_kind;

typedef struct perfc__jmember {
  const char *name;
  jv_kind kind;
  const char *str;    /* JV_STRING */
  int64_t num;        /* JV_NUMBER (integer part), JV_BOOL (0/1) */
  int num_ok;         /* the number fits int64 */
  const char **items; /* JV_STR_ARRAY */
  size_t n_items;
} perfc__jmember;

typedef struct perfc__jobject {
  perfc__jmember *m;
  size_t n;
} perfc__jobject;

/* Parses one JSON object (RFC 8259, strictly: no trailing commas, no
 * comments, no duplicate member names, valid UTF-8, no NUL in strings,
 * at most PERFC_JWT_MAX_CLAIMS members and PERFC_JWT_MAX_DEPTH levels).
 * Everything lands in `a`. Returns PERFC_JWT_OK, PERFC_JWT_MALFORMED,
 * PERFC_JWT_TOO_LARGE or PERFC_JWT_NO_MEMORY. */
perfc_jwt_status perfc__json_object(perfc_arena *a, const char *s, size_t len,
                                    perfc__jobject *out);

/* The member called `name`, or NULL. */
const perfc__jmember *perfc__json_get(const perfc__jobject *o,
                                      const char *name);

/* Decodes unpadded base64url (RFC 7515 2) into `a`, NUL-terminated;
 * refuses padding, other alphabets and non-zero trailing bits, so every
 * token has exactly one encoding. Returns 0 or -1. */
int perfc__b64url_decode(perfc_arena *a, const char *s, size_t len,
                         uint8_t **out, size_t *out_len);

#endif

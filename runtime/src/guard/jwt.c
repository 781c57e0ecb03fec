/*
 * jwt.c — compact JWS verification (RFC 7515/7519) for HS256 and RS256:
 * base64url, a small strict JSON reader, the signature check with OpenSSL 3
 * EVP, and the registered claims.
 *
 * Room: runtime/src/guard. Allocates only from the arena it is given (plus
 * OpenSSL's own short-lived contexts); logs nothing, so no token or secret
 * can reach a log from here.
 *
 * Why a hand-written JSON reader: no JSON library is among the allowed
 * dependencies, and a token needs only one flat object. The reader is
 * strict on purpose: input that two JSON parsers could read differently
 * (duplicate names, invalid UTF-8, NUL inside strings, trailing bytes) is
 * refused instead of interpreted, since a verifier and an issuer that
 * disagree on a claim's value are a classic token-confusion hole.
 */
#include "guard/auth_internal.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <string.h>

/* ---- base64url --------------------------------------------------------- */

static int b64_val(unsigned char c) {
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  if (c == '-')
    return 62;
  if (c == '_')
    return 63;
  return -1;
}

int perfc__b64url_decode(perfc_arena *a, const char *s, size_t len,
                         uint8_t **out, size_t *out_len) {
  if (len % 4 == 1)
    return -1; /* no byte count encodes to 4k+1 characters */
  uint8_t *o = perfc_arena_alloc(a, len / 4 * 3 + 3);
  if (o == NULL)
    return -1;
  size_t n = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < len; i++) {
    int v = b64_val((unsigned char)s[i]);
    if (v < 0)
      return -1;
    acc = (acc << 6) | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      o[n++] = (uint8_t)(acc >> bits);
      acc &= (1u << bits) - 1;
    }
  }
  if (acc != 0)
    return -1; /* non-zero padding bits: a second encoding of the same bytes */
  o[n] = 0;
  *out = o;
  *out_len = n;
  return 0;
}

/* ---- JSON -------------------------------------------------------------- */

typedef struct jp {
  const char *s, *end;
  perfc_arena *a;
  perfc_jwt_status err;
} jp;

static void ws(jp *p) {
  while (p->s < p->end &&
         (*p->s == ' ' || *p->s == '\t' || *p->s == '\n' || *p->s == '\r'))
    p->s++;
}

static int fail(jp *p, perfc_jwt_status e) {
  if (p->err == PERFC_JWT_OK)
    p->err = e;
  return -1;
}

static int hex4(const char *s, unsigned *v) {
  *v = 0;
  for (int i = 0; i < 4; i++) {
    char c = s[i];
    unsigned d;
    if (c >= '0' && c <= '9')
      d = (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f')
      d = (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F')
      d = (unsigned)(c - 'A' + 10);
    else
      return -1;
    *v = *v << 4 | d;
  }
  return 0;
}

static size_t put_utf8(char *o, unsigned cp) {
  if (cp < 0x80) {
    o[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (char)(0xC0 | cp >> 6);
    o[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (char)(0xE0 | cp >> 12);
    o[1] = (char)(0x80 | (cp >> 6 & 0x3F));
    o[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (char)(0xF0 | cp >> 18);
  o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
  o[2] = (char)(0x80 | (cp >> 6 & 0x3F));
  o[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlongs,
 * no surrogates, nothing above U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *s, const unsigned char *end) {
  unsigned char c = s[0];
  size_t n;
  unsigned cp, min;
  if (c < 0x80)
    return 1;
  if (c >= 0xC2 && c <= 0xDF)
    n = 2, cp = c & 0x1F, min = 0x80;
  else if (c >= 0xE0 && c <= 0xEF)
    n = 3, cp = c & 0x0F, min = 0x800;
  else if (c >= 0xF0 && c <= 0xF4)
    n = 4, cp = c & 0x07, min = 0x10000;
  else
    return 0;
  if ((size_t)(end - s) < n)
    return 0;
  for (size_t i = 1; i < n; i++) {
    if ((s[i] & 0xC0) != 0x80)
      return 0;
    cp = cp << 6 | (s[i] & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;
  return n;
}

/* Reads a string at p->s (the opening quote) into the arena. The decoded
 * form is never longer than the source, so one allocation of the source
 * length suffices. */
static char *jstring(jp *p) {
  if (p->s >= p->end || *p->s != '"')
    return fail(p, PERFC_JWT_MALFORMED), NULL;
  p->s++;
  const char *q = p->s;
  while (q < p->end && *q != '"') /* bound the copy; escapes checked below */
    q += (*q == '\\' && q + 1 < p->end) ? 2 : 1;
  if (q >= p->end)
    return fail(p, PERFC_JWT_MALFORMED), NULL;
  char *o = perfc_arena_alloc(p->a, (size_t)(q - p->s) + 1);
  if (o == NULL)
    return fail(p, PERFC_JWT_NO_MEMORY), NULL;
  size_t n = 0;
  while (p->s < q) {
    unsigned char c = (unsigned char)*p->s;
    if (c < 0x20)
      return fail(p, PERFC_JWT_MALFORMED), NULL;
    if (c != '\\') {
      size_t l =
          utf8_len((const unsigned char *)p->s, (const unsigned char *)q);
      if (l == 0)
        return fail(p, PERFC_JWT_MALFORMED), NULL;
      memcpy(o + n, p->s, l);
      n += l;
      p->s += l;
      continue;
    }
    if (q - p->s < 2)
      return fail(p, PERFC_JWT_MALFORMED), NULL;
    char e = p->s[1];
    p->s += 2;
    switch (e) {
    case '"':
      o[n++] = '"';
      break;
    case '\\':
      o[n++] = '\\';
      break;
    case '/':
      o[n++] = '/';
      break;
    case 'b':
      o[n++] = '\b';
      break;
    case 'f':
      o[n++] = '\f';
      break;
    case 'n':
      o[n++] = '\n';
      break;
    case 'r':
      o[n++] = '\r';
      break;
    case 't':
      o[n++] = '\t';
      break;
    case 'u': {
      unsigned cp, lo;
      if (q - p->s < 4 || hex4(p->s, &cp) != 0)
        return fail(p, PERFC_JWT_MALFORMED), NULL;
      p->s += 4;
      if (cp >= 0xDC00 && cp <= 0xDFFF)
        return fail(p, PERFC_JWT_MALFORMED), NULL; /* lone low surrogate */
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (q - p->s < 6 || p->s[0] != '\\' || p->s[1] != 'u' ||
            hex4(p->s + 2, &lo) != 0 || lo < 0xDC00 || lo > 0xDFFF)
          return fail(p, PERFC_JWT_MALFORMED), NULL;
        p->s += 6;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
      }
      /* A NUL would silently cut the C string a handler reads: refuse. */
      if (cp == 0)
        return fail(p, PERFC_JWT_MALFORMED), NULL;
      /* "\uXXXX" is 6 source bytes for at most 3 output bytes, and a
       * surrogate pair 12 for 4, so the output never outruns the source. */
      n += put_utf8(o + n, cp);
      break;
    }
    default:
      return fail(p, PERFC_JWT_MALFORMED), NULL;
    }
  }
  p->s = q + 1;
  o[n] = '\0';
  return o;
}

/* Validates a JSON number (RFC 8259 grammar) and keeps its integer part;
 * NumericDate values may carry fractions, which do not matter at 1 s. */
static int jnumber(jp *p, int64_t *v, int *ok) {
  const char *s = p->s;
  int neg = 0;
  uint64_t acc = 0;
  *ok = 1;
  if (s < p->end && *s == '-')
    neg = 1, s++;
  if (s >= p->end || *s < '0' || *s > '9')
    return fail(p, PERFC_JWT_MALFORMED);
  if (*s == '0') {
    s++;
  } else {
    while (s < p->end && *s >= '0' && *s <= '9') {
      unsigned d = (unsigned)(*s - '0');
      if (acc > (UINT64_C(1) << 62) / 10)
        *ok = 0; /* too large for a date; still valid JSON */
      else
        acc = acc * 10 + d;
      s++;
    }
  }
  if (s < p->end && *s == '.') {
    s++;
    if (s >= p->end || *s < '0' || *s > '9')
      return fail(p, PERFC_JWT_MALFORMED);
    while (s < p->end && *s >= '0' && *s <= '9')
      s++;
  }
  if (s < p->end && (*s == 'e' || *s == 'E')) {
    s++;
    if (s < p->end && (*s == '+' || *s == '-'))
      s++;
    if (s >= p->end || *s < '0' || *s > '9')
      return fail(p, PERFC_JWT_MALFORMED);
    while (s < p->end && *s >= '0' && *s <= '9')
      s++;
    *ok = 0; /* an exponent makes the integer part meaningless */
  }
  p->s = s;
  *v = neg ? -(int64_t)acc : (int64_t)acc;
  return 0;
}

static int lit(jp *p, const char *w) {
  size_t n = strlen(w);
  if ((size_t)(p->end - p->s) < n || memcmp(p->s, w, n) != 0)
    return fail(p, PERFC_JWT_MALFORMED);
  p->s += n;
  return 0;
}

/* Validates and skips any value; used below the top level. */
static int jskip(jp *p, int depth) {
  if (depth > PERFC_JWT_MAX_DEPTH)
    return fail(p, PERFC_JWT_TOO_LARGE);
  ws(p);
  if (p->s >= p->end)
    return fail(p, PERFC_JWT_MALFORMED);
  char c = *p->s;
  if (c == '"')
    return jstring(p) ? 0 : -1;
  if (c == 't')
    return lit(p, "true");
  if (c == 'f')
    return lit(p, "false");
  if (c == 'n')
    return lit(p, "null");
  if (c == '[' || c == '{') {
    char close = c == '[' ? ']' : '}';
    p->s++;
    ws(p);
    if (p->s < p->end && *p->s == close) {
      p->s++;
      return 0;
    }
    for (;;) {
      if (c == '{') {
        ws(p);
        if (!jstring(p))
          return -1;
        ws(p);
        if (p->s >= p->end || *p->s != ':')
          return fail(p, PERFC_JWT_MALFORMED);
        p->s++;
      }
      if (jskip(p, depth + 1) != 0)
        return -1;
      ws(p);
      if (p->s >= p->end)
        return fail(p, PERFC_JWT_MALFORMED);
      if (*p->s == close) {
        p->s++;
        return 0;
      }
      if (*p->s != ',')
        return fail(p, PERFC_JWT_MALFORMED);
      p->s++;
    }
  }
  int64_t v;
  int ok;
  return jnumber(p, &v, &ok);
}

/* A top-level member's value: strings, numbers, booleans, null and arrays
 * of strings are kept; anything else is validated and marked JV_OTHER. */
static int jvalue(jp *p, perfc__jmember *m) {
  ws(p);
  if (p->s >= p->end)
    return fail(p, PERFC_JWT_MALFORMED);
  char c = *p->s;
  if (c == '"') {
    m->kind = JV_STRING;
    m->str = jstring(p);
    return m->str ? 0 : -1;
  }
  if (c == 't' || c == 'f') {
    m->kind = JV_BOOL;
    m->num = c == 't';
    return lit(p, c == 't' ? "true" : "false");
  }
  if (c == 'n') {
    m->kind = JV_NULL;
    return lit(p, "null");
  }
  if (c == '[') {
    /* Try an array of strings first; on any other element, rewind and
     * skip it as a whole. Two passes keep the common case allocation-light. */
    const char *start = p->s;
    size_t cap = 0;
    m->kind = JV_STR_ARRAY;
    p->s++;
    ws(p);
    if (p->s < p->end && *p->s == ']') {
      p->s++;
      return 0;
    }
    for (;;) {
      ws(p);
      if (p->s >= p->end || *p->s != '"')
        break;
      char *item = jstring(p);
      if (item == NULL)
        return -1;
      if (m->n_items == PERFC_JWT_MAX_CLAIMS)
        return fail(p, PERFC_JWT_TOO_LARGE);
      if (m->n_items == cap) {
        size_t ncap = cap ? cap * 2 : 4;
        const char **ni = perfc_arena_alloc(p->a, ncap * sizeof *ni);
        if (ni == NULL)
          return fail(p, PERFC_JWT_NO_MEMORY);
        if (m->n_items)
          memcpy(ni, m->items, m->n_items * sizeof *ni);
        m->items = ni;
        cap = ncap;
      }
      m->items[m->n_items++] = item;
      ws(p);
      if (p->s < p->end && *p->s == ']') {
        p->s++;
        return 0;
      }
      if (p->s >= p->end || *p->s != ',')
        return fail(p, PERFC_JWT_MALFORMED);
      p->s++;
    }
    p->s = start;
    m->kind = JV_OTHER;
    m->items = NULL;
    m->n_items = 0;
    return jskip(p, 1);
  }
  if (c == '{') {
    m->kind = JV_OTHER;
    return jskip(p, 1);
  }
  m->kind = JV_NUMBER;
  return jnumber(p, &m->num, &m->num_ok);
}

perfc_jwt_status perfc__json_object(perfc_arena *a, const char *s, size_t len,
                                    perfc__jobject *out) {
  jp p = {.s = s, .end = s + len, .a = a, .err = PERFC_JWT_OK};
  out->m = perfc_arena_calloc(a, PERFC_JWT_MAX_CLAIMS * sizeof *out->m);
  out->n = 0;
  if (out->m == NULL)
    return PERFC_JWT_NO_MEMORY;
  ws(&p);
  if (p.s >= p.end || *p.s != '{')
    return PERFC_JWT_MALFORMED;
  p.s++;
  ws(&p);
  if (p.s < p.end && *p.s == '}') {
    p.s++;
  } else {
    for (;;) {
      ws(&p);
      char *name = jstring(&p);
      if (name == NULL)
        return p.err;
      for (size_t i = 0; i < out->n; i++)
        if (strcmp(out->m[i].name, name) == 0)
          return PERFC_JWT_MALFORMED; /* duplicate: refuse, see the header */
      if (out->n == PERFC_JWT_MAX_CLAIMS)
        return PERFC_JWT_TOO_LARGE;
      ws(&p);
      if (p.s >= p.end || *p.s != ':')
        return PERFC_JWT_MALFORMED;
      p.s++;
      perfc__jmember *m = &out->m[out->n];
      m->name = name;
      if (jvalue(&p, m) != 0)
        return p.err;
      out->n++;
      ws(&p);
      if (p.s < p.end && *p.s == '}') {
        p.s++;
        break;
      }
      if (p.s >= p.end || *p.s != ',')
        return PERFC_JWT_MALFORMED;
      p.s++;
    }
  }
  ws(&p);
  return p.s == p.end ? PERFC_JWT_OK : PERFC_JWT_MALFORMED;
}

const perfc__jmember *perfc__json_get(const perfc__jobject *o,
                                      const char *name) {
  for (size_t i = 0; i < o->n; i++)
    if (strcmp(o->m[i].name, name) == 0)
      return &o->m[i];
  return NULL;
}

/* ---- claims getters ---------------------------------------------------- */

const char *perfc_jwt_claim_str(const perfc_jwt_claims *c, const char *name) {
  if (c == NULL || name == NULL || c->internal == NULL)
    return NULL;
  const perfc__jmember *m = perfc__json_get(c->internal, name);
  return m && m->kind == JV_STRING ? m->str : NULL;
}

/* Whether space-separated `list` has the word `w`. */
static int has_word(const char *list, const char *w) {
  size_t wl = strlen(w);
  if (wl == 0)
    return 0;
  for (const char *s = list; *s;) {
    while (*s == ' ')
      s++;
    const char *e = s;
    while (*e && *e != ' ')
      e++;
    if ((size_t)(e - s) == wl && memcmp(s, w, wl) == 0)
      return 1;
    s = e;
  }
  return 0;
}

int perfc_jwt_claim_has(const perfc_jwt_claims *c, const char *name,
                        const char *value) {
  if (c == NULL || name == NULL || value == NULL || c->internal == NULL)
    return 0;
  const perfc__jmember *m = perfc__json_get(c->internal, name);
  if (m == NULL)
    return 0;
  if (m->kind == JV_STRING)
    return strcmp(m->str, value) == 0 || has_word(m->str, value);
  if (m->kind == JV_STR_ARRAY)
    for (size_t i = 0; i < m->n_items; i++)
      if (strcmp(m->items[i], value) == 0)
        return 1;
  return 0;
}

const char *perfc_jwt_status_str(perfc_jwt_status s) {
  switch (s) {
  case PERFC_JWT_OK:
    return "ok";
  case PERFC_JWT_MALFORMED:
    return "malformed token";
  case PERFC_JWT_TOO_LARGE:
    return "token too large";
  case PERFC_JWT_BAD_ALG:
    return "algorithm not accepted";
  case PERFC_JWT_BAD_SIGNATURE:
    return "bad signature";
  case PERFC_JWT_EXPIRED:
    return "token expired";
  case PERFC_JWT_NOT_YET_VALID:
    return "token not yet valid";
  case PERFC_JWT_BAD_ISSUER:
    return "issuer not accepted";
  case PERFC_JWT_BAD_AUDIENCE:
    return "audience not accepted";
  case PERFC_JWT_MISSING_CLAIM:
    return "required claim missing";
  case PERFC_JWT_NO_MEMORY:
    return "out of memory";
  }
  return "unknown";
}

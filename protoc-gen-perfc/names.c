/*
 * names.c — protoc-c's identifier mangling.
 *
 * Room: protoc-gen-perfc (the generator). Pure functions over strings.
 *
 * protoc-c uses the C locale's isupper()/toupper(), so only ASCII letters
 * change; digits and underscores are neither upper nor lower case. We use
 * explicit ASCII tests so the process locale can never change a name.
 */
#include "names.h"

#include "buf.h"

#include <stdlib.h>
#include <string.h>

static int is_upper(char c) { return c >= 'A' && c <= 'Z'; }
static int is_lower(char c) { return c >= 'a' && c <= 'z'; }
static char lower(char c) { return is_upper(c) ? (char)(c - 'A' + 'a') : c; }
static char upper(char c) { return is_lower(c) ? (char)(c - 'a' + 'A') : c; }

static char *camel_to(const char *name, int to_upper) {
  perfc__buf b = {0};
  /* Starting as "was upper" suppresses a leading underscore, as protoc-c
   * does. */
  int was_upper = 1;
  for (const char *p = name; *p; p++) {
    int up = is_upper(*p);
    if (up && !was_upper)
      perfc__buf_putc(&b, '_');
    perfc__buf_putc(&b, to_upper ? upper(*p) : lower(*p));
    was_upper = up;
  }
  return perfc__buf_take(&b);
}

char *perfc__camel_to_lower(const char *name) { return camel_to(name, 0); }
char *perfc__camel_to_upper(const char *name) { return camel_to(name, 1); }

char *perfc__to_camel(const char *name) {
  perfc__buf b = {0};
  int next_upper = 1;
  for (const char *p = name; *p; p++) {
    if (*p == '_') {
      next_upper = 1;
    } else if (next_upper) {
      perfc__buf_putc(&b, upper(*p));
      next_upper = 0;
    } else {
      perfc__buf_putc(&b, *p);
    }
  }
  return perfc__buf_take(&b);
}

char *perfc__to_upper(const char *name) {
  char *s = perfc__xstrdup(name);
  for (char *p = s; *p; p++)
    *p = upper(*p);
  return s;
}

/* Splits on '.', skips empty pieces (a leading dot), maps each piece and
 * joins with "__": protoc-c's FullNameTo{Lower,Upper,C}. */
static char *full_name_map(const char *full_name, char *(*map)(const char *)) {
  perfc__buf b = {0};
  const char *p = full_name;
  while (*p) {
    const char *dot = strchr(p, '.');
    size_t n = dot ? (size_t)(dot - p) : strlen(p);
    if (n) {
      char *piece = perfc__xstrndup(p, n);
      char *m = map(piece);
      if (b.len)
        perfc__buf_puts(&b, "__");
      perfc__buf_puts(&b, m);
      free(m);
      free(piece);
    }
    p += n;
    if (*p == '.')
      p++;
  }
  return perfc__buf_take(&b);
}

char *perfc__full_name_to_lower(const char *full_name) {
  return full_name_map(full_name, perfc__camel_to_lower);
}

char *perfc__full_name_to_upper(const char *full_name) {
  return full_name_map(full_name, perfc__camel_to_upper);
}

char *perfc__full_name_to_c(const char *full_name) {
  return full_name_map(full_name, perfc__to_camel);
}

int perfc__is_c_keyword(const char *s) {
  static const char *const kw[] = {
      "auto",       "break",     "case",           "char",
      "const",      "continue",  "default",        "do",
      "double",     "else",      "enum",           "extern",
      "float",      "for",       "goto",           "if",
      "inline",     "int",       "long",           "register",
      "restrict",   "return",    "short",          "signed",
      "sizeof",     "static",    "struct",         "switch",
      "typedef",    "union",     "unsigned",       "void",
      "volatile",   "while",     "_Alignas",       "_Alignof",
      "_Atomic",    "_Bool",     "_Complex",       "_Generic",
      "_Imaginary", "_Noreturn", "_Static_assert", "_Thread_local"};
  for (size_t i = 0; i < sizeof kw / sizeof kw[0]; i++)
    if (strcmp(s, kw[i]) == 0)
      return 1;
  return 0;
}

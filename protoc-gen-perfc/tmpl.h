/*
 * tmpl.h — perfc's small template engine and the values it renders.
 *
 * Syntax (a subset of mustache, with strict lookups):
 *   {{name}}              the string value `name`, looked up from the
 *                         innermost section outwards
 *   {{#name}}...{{/name}} a list: once per item, with the item's values in
 *                         scope; true / a non-empty string / an object: once
 *   {{^name}}...{{/name}} once when `name` is false, an empty list or ""
 *   {{! comment }}        nothing; the only tag that may span lines
 * Inside a list, {{_index}} is the item's index and _first/_last are booleans.
 * A section, close or comment tag alone on its line removes the whole line,
 * so templates can be laid out readably. A name that is not defined is an
 * error (it is a typo in a template, never a legitimate empty value).
 *
 * Room: protoc-gen-perfc (the generator). Pure in-memory work.
 */
#ifndef PERFC_GEN_TMPL_H
#define PERFC_GEN_TMPL_H

#include "buf.h"

#include <stddef.h>

/* ---- values ------------------------------------------------------------ */

typedef struct perfc__tv perfc__tv;

/** A new empty object (a set of named values). Free with perfc__tv_free. */
perfc__tv *perfc__tv_obj(void);
/** Sets key to a copy of `val` (replacing an earlier value of that key). */
void perfc__tv_set_str(perfc__tv *obj, const char *key, const char *val);
void perfc__tv_set_strf(perfc__tv *obj, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void perfc__tv_set_bool(perfc__tv *obj, const char *key, int val);
/** Sets key to a new empty list and returns it (owned by obj). */
perfc__tv *perfc__tv_set_list(perfc__tv *obj, const char *key);
/** Appends a new empty object to `list` and returns it (owned by list). */
perfc__tv *perfc__tv_list_add(perfc__tv *list);
size_t perfc__tv_list_len(const perfc__tv *list);
/** The string value of `key` in obj, or NULL when absent / not a string. */
const char *perfc__tv_get_str(const perfc__tv *obj, const char *key);
void perfc__tv_free(perfc__tv *v);

/* ---- templates --------------------------------------------------------- */

typedef struct perfc__tmpl perfc__tmpl;

/** Parses `src` (`len` bytes). `name` appears in error messages. Returns 0,
 *  or -1 with `*err` set to a malloc'd message "NAME:LINE: ...". */
int perfc__tmpl_parse(perfc__tmpl **out, const char *name, const char *src,
                      size_t len, char **err);
/** Renders into `out` (appending). Returns 0, or -1 with `*err` set. */
int perfc__tmpl_render(const perfc__tmpl *t, const perfc__tv *root,
                       perfc__buf *out, char **err);
void perfc__tmpl_free(perfc__tmpl *t);

#endif /* PERFC_GEN_TMPL_H */

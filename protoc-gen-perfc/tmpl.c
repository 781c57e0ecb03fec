/*
 * tmpl.c — parsing and rendering of perfc templates (see tmpl.h).
 *
 * Room: protoc-gen-perfc (the generator). Pure in-memory work.
 *
 * Templates are parsed into a tree once, so every syntax error is reported
 * with its line before anything is rendered, and rendering is a walk.
 */
#include "tmpl.h"

#include <stdlib.h>
#include <string.h>

/* ---- values ------------------------------------------------------------ */

enum tv_kind { TV_STR, TV_BOOL, TV_LIST, TV_OBJ };

typedef struct tv_field {
  char *key;
  perfc__tv *val;
} tv_field;

struct perfc__tv {
  enum tv_kind kind;
  char *str;
  int b;
  /* TV_LIST: items; TV_OBJ: fields. */
  perfc__tv **items;
  tv_field *fields;
  size_t n;
};

static perfc__tv *tv_new(enum tv_kind kind) {
  perfc__tv *v = perfc__xcalloc(1, sizeof *v);
  v->kind = kind;
  return v;
}

perfc__tv *perfc__tv_obj(void) { return tv_new(TV_OBJ); }

void perfc__tv_free(perfc__tv *v) {
  if (!v)
    return;
  free(v->str);
  if (v->kind == TV_LIST) {
    for (size_t i = 0; i < v->n; i++)
      perfc__tv_free(v->items[i]);
    free(v->items);
  } else if (v->kind == TV_OBJ) {
    for (size_t i = 0; i < v->n; i++) {
      free(v->fields[i].key);
      perfc__tv_free(v->fields[i].val);
    }
    free(v->fields);
  }
  free(v);
}

static void obj_put(perfc__tv *obj, const char *key, perfc__tv *val) {
  for (size_t i = 0; i < obj->n; i++) {
    if (strcmp(obj->fields[i].key, key) == 0) {
      perfc__tv_free(obj->fields[i].val);
      obj->fields[i].val = val;
      return;
    }
  }
  obj->fields =
      perfc__xrealloc(obj->fields, (obj->n + 1) * sizeof *obj->fields);
  obj->fields[obj->n].key = perfc__xstrdup(key);
  obj->fields[obj->n].val = val;
  obj->n++;
}

static const perfc__tv *obj_get(const perfc__tv *obj, const char *key) {
  if (!obj || obj->kind != TV_OBJ)
    return NULL;
  for (size_t i = 0; i < obj->n; i++)
    if (strcmp(obj->fields[i].key, key) == 0)
      return obj->fields[i].val;
  return NULL;
}

void perfc__tv_set_str(perfc__tv *obj, const char *key, const char *val) {
  perfc__tv *v = tv_new(TV_STR);
  v->str = perfc__xstrdup(val);
  obj_put(obj, key, v);
}

void perfc__tv_set_strf(perfc__tv *obj, const char *key, const char *fmt, ...) {
  perfc__buf b = {0};
  va_list ap;
  va_start(ap, fmt);
  perfc__buf_vprintf(&b, fmt, ap);
  va_end(ap);
  perfc__tv *v = tv_new(TV_STR);
  v->str = perfc__buf_take(&b);
  obj_put(obj, key, v);
}

void perfc__tv_set_bool(perfc__tv *obj, const char *key, int val) {
  perfc__tv *v = tv_new(TV_BOOL);
  v->b = val != 0;
  obj_put(obj, key, v);
}

perfc__tv *perfc__tv_set_list(perfc__tv *obj, const char *key) {
  perfc__tv *v = tv_new(TV_LIST);
  obj_put(obj, key, v);
  return v;
}

perfc__tv *perfc__tv_list_add(perfc__tv *list) {
  perfc__tv *item = tv_new(TV_OBJ);
  list->items =
      perfc__xrealloc(list->items, (list->n + 1) * sizeof *list->items);
  list->items[list->n++] = item;
  return item;
}

size_t perfc__tv_list_len(const perfc__tv *list) { return list->n; }

const char *perfc__tv_get_str(const perfc__tv *obj, const char *key) {
  const perfc__tv *v = obj_get(obj, key);
  return v && v->kind == TV_STR ? v->str : NULL;
}

/* ---- parse tree -------------------------------------------------------- */

enum node_kind { N_TEXT, N_VAR, N_SECTION, N_INVERTED };

typedef struct node {
  enum node_kind kind;
  char *text; /* N_TEXT: the text; others: the name */
  size_t len;
  int line;
  struct node *kids; /* sections */
  size_t n_kids;
} node;

struct perfc__tmpl {
  char *name;
  node root;
};

static void node_clear(node *n) {
  for (size_t i = 0; i < n->n_kids; i++)
    node_clear(&n->kids[i]);
  free(n->kids);
  free(n->text);
}

void perfc__tmpl_free(perfc__tmpl *t) {
  if (!t)
    return;
  node_clear(&t->root);
  free(t->name);
  free(t);
}

static node *add_kid(node *parent, enum node_kind kind, const char *s,
                     size_t len, int line) {
  parent->kids = perfc__xrealloc(parent->kids,
                                 (parent->n_kids + 1) * sizeof *parent->kids);
  node *n = &parent->kids[parent->n_kids++];
  memset(n, 0, sizeof *n);
  n->kind = kind;
  n->text = perfc__xstrndup(s, len);
  n->len = len;
  n->line = line;
  return n;
}

static int valid_name(const char *s, size_t n) {
  if (n == 0)
    return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '_'))
      return 0;
  }
  return 1;
}

static int line_of(const char *src, const char *p) {
  int line = 1;
  for (const char *q = src; q < p; q++)
    if (*q == '\n')
      line++;
  return line;
}

/* The open sections while parsing: the node (by index path, since kids
 * arrays move when they grow) is re-found from the root each time. */
typedef struct open_sec {
  size_t idx; /* index in the parent's kids */
} open_sec;

static node *current(node *root, const open_sec *stack, size_t depth) {
  node *n = root;
  for (size_t i = 0; i < depth; i++)
    n = &n->kids[stack[i].idx];
  return n;
}

int perfc__tmpl_parse(perfc__tmpl **out, const char *name, const char *src,
                      size_t len, char **err) {
  perfc__tmpl *t = perfc__xcalloc(1, sizeof *t);
  t->name = perfc__xstrdup(name);
  open_sec stack[64];
  size_t depth = 0;
  const char *end = src + len;
  const char *p = src;
  const char *text_start = src;
  *out = NULL;

  while (p < end) {
    const char *open = NULL;
    for (const char *q = p; q + 1 < end; q++) {
      if (q[0] == '{' && q[1] == '{') {
        open = q;
        break;
      }
    }
    if (!open)
      break;
    /* Only comments may span lines: a stray "{{" in C text then fails on
     * its own line instead of swallowing the rest of the template. */
    int is_comment = open + 2 < end && open[2] == '!';
    const char *close = NULL;
    for (const char *q = open + 2; q + 1 < end; q++) {
      if (q[0] == '\n' && !is_comment)
        break;
      if (q[0] == '}' && q[1] == '}') {
        close = q;
        break;
      }
    }
    int line = line_of(src, open);
    if (!close) {
      *err = perfc__xasprintf("%s:%d: '{{' without a closing '}}' on the same "
                              "line",
                              name, line);
      goto fail;
    }
    const char *in = open + 2;
    const char *in_end = close;
    char sigil = *in;
    if (sigil == '#' || sigil == '^' || sigil == '/' || sigil == '!')
      in++;
    else
      sigil = 0;
    while (in < in_end && (*in == ' ' || *in == '\t'))
      in++;
    while (in_end > in && (in_end[-1] == ' ' || in_end[-1] == '\t'))
      in_end--;
    size_t nlen = (size_t)(in_end - in);
    if (sigil != '!' && !valid_name(in, nlen)) {
      *err = perfc__xasprintf(
          "%s:%d: bad tag '%.*s': expected {{name}}, {{#name}}, {{^name}}, "
          "{{/name}} or {{! comment}} with a name of letters, digits and '_'",
          name, line, (int)(close + 2 - open), open);
      goto fail;
    }

    /* A block tag alone on its line takes the whole line with it. */
    const char *text_end = open;
    const char *after = close + 2;
    if (sigil) {
      const char *ls = open;
      while (ls > src && (ls[-1] == ' ' || ls[-1] == '\t'))
        ls--;
      const char *le = after;
      while (le < end && (*le == ' ' || *le == '\t'))
        le++;
      int at_line_start = ls == src || ls[-1] == '\n';
      int at_line_end = le == end || *le == '\n' ||
                        (*le == '\r' && le + 1 < end && le[1] == '\n');
      if (at_line_start && at_line_end) {
        text_end = ls;
        after = le == end ? le : (*le == '\r' ? le + 2 : le + 1);
      }
    }
    node *cur = current(&t->root, stack, depth);
    if (text_end > text_start)
      add_kid(cur, N_TEXT, text_start, (size_t)(text_end - text_start), 0);

    if (sigil == '#' || sigil == '^') {
      if (depth == sizeof stack / sizeof stack[0]) {
        *err = perfc__xasprintf("%s:%d: sections nested deeper than %zu", name,
                                line, sizeof stack / sizeof stack[0]);
        goto fail;
      }
      add_kid(cur, sigil == '#' ? N_SECTION : N_INVERTED, in, nlen, line);
      stack[depth++].idx = cur->n_kids - 1;
    } else if (sigil == '/') {
      if (depth == 0) {
        *err = perfc__xasprintf("%s:%d: '{{/%.*s}}' closes a section that was "
                                "never opened",
                                name, line, (int)nlen, in);
        goto fail;
      }
      node *sec = current(&t->root, stack, depth);
      if (sec->len != nlen || memcmp(sec->text, in, nlen) != 0) {
        *err =
            perfc__xasprintf("%s:%d: '{{/%.*s}}' does not match the open "
                             "section '%s' from line %d",
                             name, line, (int)nlen, in, sec->text, sec->line);
        goto fail;
      }
      depth--;
    } else if (sigil == 0) {
      add_kid(cur, N_VAR, in, nlen, line);
    }
    p = after;
    text_start = after;
  }
  if (end > text_start)
    add_kid(current(&t->root, stack, depth), N_TEXT, text_start,
            (size_t)(end - text_start), 0);
  if (depth > 0) {
    node *sec = current(&t->root, stack, depth);
    *err = perfc__xasprintf("%s:%d: section '%s' is never closed (missing "
                            "'{{/%s}}')",
                            name, sec->line, sec->text, sec->text);
    goto fail;
  }
  *out = t;
  return 0;
fail:
  perfc__tmpl_free(t);
  return -1;
}

/* ---- rendering --------------------------------------------------------- */

typedef struct scope {
  const perfc__tv *obj;
  const struct scope *up;
  /* Set for list items: the loop's position, for _index/_first/_last. */
  int in_list;
  size_t index, count;
} scope;

typedef struct render_ctx {
  const perfc__tmpl *t;
  perfc__buf *out;
  char **err;
  /* Loop variables are materialised as values so lookups are uniform. */
  perfc__tv *scratch;
} render_ctx;

static const perfc__tv *lookup(render_ctx *rc, const scope *s,
                               const char *name) {
  if (name[0] == '_') {
    const scope *l = s;
    while (l && !l->in_list)
      l = l->up;
    if (l && (strcmp(name, "_index") == 0 || strcmp(name, "_first") == 0 ||
              strcmp(name, "_last") == 0)) {
      if (strcmp(name, "_index") == 0)
        perfc__tv_set_strf(rc->scratch, name, "%zu", l->index);
      else if (strcmp(name, "_first") == 0)
        perfc__tv_set_bool(rc->scratch, name, l->index == 0);
      else
        perfc__tv_set_bool(rc->scratch, name, l->index + 1 == l->count);
      return obj_get(rc->scratch, name);
    }
  }
  for (; s; s = s->up) {
    const perfc__tv *v = obj_get(s->obj, name);
    if (v)
      return v;
  }
  return NULL;
}

static int truthy(const perfc__tv *v) {
  switch (v->kind) {
  case TV_STR:
    return v->str[0] != '\0';
  case TV_BOOL:
    return v->b;
  case TV_LIST:
    return v->n > 0;
  case TV_OBJ:
    return 1;
  }
  return 0;
}

static int render_nodes(render_ctx *rc, const node *kids, size_t n,
                        const scope *s);

static int render_node(render_ctx *rc, const node *nd, const scope *s) {
  if (nd->kind == N_TEXT) {
    perfc__buf_append(rc->out, nd->text, nd->len);
    return 0;
  }
  const perfc__tv *v = lookup(rc, s, nd->text);
  if (!v) {
    *rc->err = perfc__xasprintf("%s:%d: '%s' is not defined here", rc->t->name,
                                nd->line, nd->text);
    return -1;
  }
  if (nd->kind == N_VAR) {
    if (v->kind != TV_STR) {
      *rc->err = perfc__xasprintf("%s:%d: '{{%s}}' is a %s, not a string; use "
                                  "it as a section",
                                  rc->t->name, nd->line, nd->text,
                                  v->kind == TV_LIST   ? "list"
                                  : v->kind == TV_BOOL ? "boolean"
                                                       : "object");
      return -1;
    }
    perfc__buf_puts(rc->out, v->str);
    return 0;
  }
  if (nd->kind == N_INVERTED) {
    if (!truthy(v))
      return render_nodes(rc, nd->kids, nd->n_kids, s);
    return 0;
  }
  if (v->kind == TV_LIST) {
    for (size_t i = 0; i < v->n; i++) {
      scope inner = {v->items[i], s, 1, i, v->n};
      if (render_nodes(rc, nd->kids, nd->n_kids, &inner) != 0)
        return -1;
    }
    return 0;
  }
  if (!truthy(v))
    return 0;
  if (v->kind == TV_OBJ) {
    scope inner = {v, s, 0, 0, 0};
    return render_nodes(rc, nd->kids, nd->n_kids, &inner);
  }
  return render_nodes(rc, nd->kids, nd->n_kids, s);
}

static int render_nodes(render_ctx *rc, const node *kids, size_t n,
                        const scope *s) {
  for (size_t i = 0; i < n; i++)
    if (render_node(rc, &kids[i], s) != 0)
      return -1;
  return 0;
}

int perfc__tmpl_render(const perfc__tmpl *t, const perfc__tv *root,
                       perfc__buf *out, char **err) {
  render_ctx rc = {t, out, err, perfc__tv_obj()};
  scope top = {root, NULL, 0, 0, 0};
  int rv = render_nodes(&rc, t->root.kids, t->root.n_kids, &top);
  perfc__tv_free(rc.scratch);
  return rv;
}

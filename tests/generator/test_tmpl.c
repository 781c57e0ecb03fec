/*
 * test_tmpl.c — protoc-gen-perfc/tmpl.c: the template engine.
 *
 * Room: tests/generator. In-memory only.
 */
#include "tmpl.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

/* Renders `src` with `model`; returns the output or the error (malloc'd),
 * telling which through *failed. */
static char *run(const char *src, const perfc__tv *model, int *failed) {
  perfc__tmpl *t = NULL;
  char *err = NULL;
  *failed = 1;
  if (perfc__tmpl_parse(&t, "t.tmpl", src, strlen(src), &err) != 0)
    return err;
  perfc__buf out = {0};
  if (perfc__tmpl_render(t, model, &out, &err) != 0) {
    perfc__tmpl_free(t);
    perfc__buf_free(&out);
    return err;
  }
  perfc__tmpl_free(t);
  *failed = 0;
  return perfc__buf_take(&out);
}

static void expect_out(const char *src, const perfc__tv *model,
                       const char *want) {
  int failed;
  char *got = run(src, model, &failed);
  cr_expect(!failed, "unexpected error: %s", got);
  if (!failed)
    cr_expect_str_eq(got, want);
  free(got);
}

static void expect_err(const char *src, const perfc__tv *model,
                       const char *want) {
  int failed;
  char *got = run(src, model, &failed);
  cr_expect(failed, "expected an error, got output: %s", got);
  if (failed)
    cr_expect_str_eq(got, want);
  free(got);
}

static perfc__tv *model(void) {
  perfc__tv *m = perfc__tv_obj();
  perfc__tv_set_str(m, "name", "Svc");
  perfc__tv_set_str(m, "empty", "");
  perfc__tv_set_bool(m, "yes", 1);
  perfc__tv_set_bool(m, "no", 0);
  perfc__tv *list = perfc__tv_set_list(m, "items");
  perfc__tv_set_str(perfc__tv_list_add(list), "v", "a");
  perfc__tv_set_str(perfc__tv_list_add(list), "v", "b");
  perfc__tv_set_str(perfc__tv_list_add(list), "v", "c");
  perfc__tv_set_list(m, "none");
  return m;
}

Test(tmpl, variables_and_text) {
  perfc__tv *m = model();
  expect_out("hello {{name}}!", m, "hello Svc!");
  expect_out("{{ name }}", m, "Svc");
  expect_out("no tags", m, "no tags");
  expect_out("", m, "");
  expect_out("a { b } c", m, "a { b } c");
  perfc__tv_set_str(m, "name", "Other");
  expect_out("{{name}}", m, "Other");
  perfc__tv_free(m);
}

Test(tmpl, loops_with_outer_scope_and_position) {
  perfc__tv *m = model();
  expect_out("{{#items}}{{name}}.{{v}}{{^_last}},{{/_last}}{{/items}}", m,
             "Svc.a,Svc.b,Svc.c");
  expect_out("{{#items}}{{_index}}{{#_first}}F{{/_first}}{{/items}}", m,
             "0F12");
  expect_out("[{{#none}}x{{/none}}]", m, "[]");
  expect_out("{{^none}}empty{{/none}}", m, "empty");
  perfc__tv_free(m);
}

Test(tmpl, conditionals) {
  perfc__tv *m = model();
  expect_out("{{#yes}}Y{{/yes}}{{#no}}N{{/no}}", m, "Y");
  expect_out("{{^yes}}Y{{/yes}}{{^no}}N{{/no}}", m, "N");
  expect_out("{{#empty}}E{{/empty}}{{^empty}}e{{/empty}}", m, "e");
  expect_out("{{#name}}has {{name}}{{/name}}", m, "has Svc");
  perfc__tv_free(m);
}

Test(tmpl, standalone_lines_vanish) {
  perfc__tv *m = model();
  expect_out("a\n{{#items}}\n  {{v}}\n{{/items}}\nb\n", m,
             "a\n  a\n  b\n  c\nb\n");
  expect_out("x\n  {{! a comment\n  over lines }}\ny\n", m, "x\ny\n");
  expect_out("{{#yes}}\r\nwin\r\n{{/yes}}\r\n", m, "win\r\n");
  /* Not alone on the line: kept inline. */
  expect_out("a {{#yes}}b{{/yes}} c\n", m, "a b c\n");
  perfc__tv_free(m);
}

Test(tmpl, malformed_templates) {
  perfc__tv *m = model();
  expect_err("x\n{{#items}}\n", m,
             "t.tmpl:2: section 'items' is never closed (missing "
             "'{{/items}}')");
  expect_err("{{#items}}{{/other}}", m,
             "t.tmpl:1: '{{/other}}' does not match the open section 'items' "
             "from line 1");
  expect_err("\n\n{{/items}}", m,
             "t.tmpl:3: '{{/items}}' closes a section that was never opened");
  expect_err("{{name", m,
             "t.tmpl:1: '{{' without a closing '}}' on the same line");
  expect_err("{{na me}}", m,
             "t.tmpl:1: bad tag '{{na me}}': expected {{name}}, {{#name}}, "
             "{{^name}}, {{/name}} or {{! comment}} with a name of letters, "
             "digits and '_'");
  expect_err("{{}}", m,
             "t.tmpl:1: bad tag '{{}}': expected {{name}}, {{#name}}, "
             "{{^name}}, {{/name}} or {{! comment}} with a name of letters, "
             "digits and '_'");
  perfc__tv_free(m);
}

Test(tmpl, render_errors) {
  perfc__tv *m = model();
  expect_err("a\n{{missing}}", m, "t.tmpl:2: 'missing' is not defined here");
  expect_err("{{items}}", m,
             "t.tmpl:1: '{{items}}' is a list, not a string; use it as a "
             "section");
  expect_err("{{yes}}", m,
             "t.tmpl:1: '{{yes}}' is a boolean, not a string; use it as a "
             "section");
  expect_err("{{#items}}{{nope}}{{/items}}", m,
             "t.tmpl:1: 'nope' is not defined here");
  expect_err("{{_index}}", m, "t.tmpl:1: '_index' is not defined here");
  perfc__tv_free(m);
}

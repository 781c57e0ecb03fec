/* fuzz_tmpl.c — protoc-gen-perfc's template language (tmpl.c): parse any
 * bytes as a template, and render what parses against a small value tree
 * shaped like the generator's model (strings, booleans, nested lists), so
 * sections, loops, lookups and escapes are all reached. Custom templates
 * come from users (templates=DIR), so the parser must refuse, not crash.
 *
 * Room: tests/fuzz. */
#include "buf.h"
#include "tmpl.h"

#include <stdint.h>
#include <stdlib.h>

static perfc__tv *model(void) {
  perfc__tv *root = perfc__tv_obj();
  perfc__tv_set_str(root, "name", "Echo");
  perfc__tv_set_str(root, "package", "bench.v1");
  perfc__tv_set_bool(root, "streaming", 1);
  perfc__tv_set_bool(root, "empty", 0);
  perfc__tv *svcs = perfc__tv_set_list(root, "services");
  for (int i = 0; i < 2; i++) {
    perfc__tv *s = perfc__tv_list_add(svcs);
    perfc__tv_set_strf(s, "name", "Svc%d", i);
    perfc__tv *ms = perfc__tv_set_list(s, "methods");
    for (int j = 0; j < 3; j++) {
      perfc__tv *m = perfc__tv_list_add(ms);
      perfc__tv_set_strf(m, "name", "M%d", j);
      perfc__tv_set_bool(m, "server_streaming", j == 1);
    }
  }
  perfc__tv_set_list(root, "none");
  return root;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static perfc__tv *root;
  if (root == NULL)
    root = model();
  if (size > 1 << 16)
    return 0;
  perfc__tmpl *t = NULL;
  char *err = NULL;
  if (perfc__tmpl_parse(&t, "fuzz", (const char *)data, size, &err) == 0) {
    perfc__buf out = {0};
    char *rerr = NULL;
    (void)perfc__tmpl_render(t, root, &out, &rerr);
    free(rerr);
    perfc__buf_free(&out);
    perfc__tmpl_free(t);
  } else {
    free(err);
  }
  return 0;
}

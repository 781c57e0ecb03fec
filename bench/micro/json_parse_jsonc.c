/*
 * json_parse_jsonc.c — json_parse.c's json-c case (json-c's headers clash
 * with jansson's in one file). Room: benchmarks (micro).
 */
#include <json-c/json.h>

#include <stdlib.h>
#include <string.h>

extern const char body[];
extern const size_t body_len;
extern volatile size_t sink;
void run_jsonc(void);

/* ---- json-c ------------------------------------------------------------ */

static size_t walk_c(struct json_object *v) {
  size_t s = 0;
  switch (json_object_get_type(v)) {
  case json_type_object: {
    json_object_object_foreach(v, k, x) s +=
        strlen(k) + (strcmp(k, "user") == 0) + walk_c(x);
    break;
  }
  case json_type_array:
    for (size_t i = 0; i < json_object_array_length(v); i++)
      s += walk_c(json_object_array_get_idx(v, i));
    break;
  case json_type_string:
    s += (size_t)json_object_get_string_len(v);
    break;
  case json_type_int:
    s += (size_t)json_object_get_int64(v);
    break;
  case json_type_double:
    s += (size_t)json_object_get_double(v);
    break;
  default:
    break;
  }
  return s;
}

__attribute__((noinline)) void run_jsonc(void) {
  struct json_tokener *t = json_tokener_new();
  struct json_object *v = json_tokener_parse_ex(t, body, (int)body_len);
  if (!v)
    abort();
  sink += walk_c(v);
  json_object_put(v);
  json_tokener_free(t);
}


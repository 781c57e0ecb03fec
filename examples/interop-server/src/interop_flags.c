/*
 * interop_flags.c — `--name value` / `--name=value` parsing for the interop
 * programs. grpc's interop runners pass flags in both spellings, so both
 * must work; unknown flags are an error so a typo never silently runs the
 * wrong test.
 *
 * Room: examples/interop-server.
 */
#include "interop_flags.h"

#include <stdio.h>
#include <string.h>

int perfc_interop_parse_flags(int argc, char **argv, perfc_interop_flag *flags,
                              int nflags) {
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    if (strncmp(arg, "--", 2) != 0) {
      fprintf(stderr, "unexpected argument '%s'\n", arg);
      return -1;
    }
    arg += 2;
    const char *eq = strchr(arg, '=');
    size_t nlen = eq ? (size_t)(eq - arg) : strlen(arg);
    int found = 0;
    for (int f = 0; f < nflags; f++) {
      if (strlen(flags[f].name) != nlen || strncmp(flags[f].name, arg, nlen) != 0)
        continue;
      found = 1;
      if (eq != NULL) {
        *flags[f].value = eq + 1;
      } else if (i + 1 < argc) {
        *flags[f].value = argv[++i];
      } else {
        fprintf(stderr, "flag --%s needs a value\n", flags[f].name);
        return -1;
      }
      break;
    }
    if (!found) {
      fprintf(stderr, "unknown flag '--%.*s'\n", (int)nlen, arg);
      return -1;
    }
  }
  return 0;
}

int perfc_interop_bool(const char *text) {
  if (text == NULL || strcmp(text, "false") == 0 || strcmp(text, "0") == 0)
    return 0;
  if (strcmp(text, "true") == 0 || strcmp(text, "1") == 0)
    return 1;
  return -1;
}

/*
 * interop_flags.h — command-line flags as grpc's interop programs take them:
 * `--name value` or `--name=value`, booleans spelled true/false.
 *
 * Room: examples/interop-server (shared by interop-server and
 * interop-client).
 */
#ifndef PERFC_INTEROP_FLAGS_H
#define PERFC_INTEROP_FLAGS_H

/** One flag the program knows; `value` receives the text (borrowed from
 *  argv) or stays as initialised when the flag is absent. */
typedef struct perfc_interop_flag {
  const char *name; /* without the leading "--" */
  const char **value;
} perfc_interop_flag;

/** Fills the flags from argv. Returns 0, or -1 after printing which
 *  argument is unknown or lacks a value. */
int perfc_interop_parse_flags(int argc, char **argv, perfc_interop_flag *flags,
                              int nflags);

/** "true"/"1" -> 1, "false"/"0"/NULL -> 0, anything else -> -1. */
int perfc_interop_bool(const char *text);

#endif /* PERFC_INTEROP_FLAGS_H */

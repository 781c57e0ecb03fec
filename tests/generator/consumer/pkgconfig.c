/*
 * pkgconfig.c — compiled with `pkg-config --cflags --libs perfc` only, to
 * show the .pc file finds perfc.h, the well-known types and both libraries.
 *
 * Room: tests/generator/consumer. Prints to stdout only.
 */
#include "google/protobuf/timestamp.pb-c.h"
#include <perfc.h>

#include <stdio.h>

int main(void) {
  Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
  ts.nanos = 5;
  printf("perfc %u, timestamp %zu bytes\n", perfc_version(),
         google__protobuf__timestamp__get_packed_size(&ts));
  return 0;
}

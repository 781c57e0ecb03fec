/*
 * main.c — prints what perfc_generate() produced for hello.proto, so
 * run.sh can check the tables came through an installed perfc intact.
 *
 * Room: tests/generator/consumer. Prints to stdout only.
 */
#include "hello/v1/hello.perfc.h"

#include <stdio.h>

int main(void) {
  const perfc_service_desc *d = &hello__v1__greeter__perfc_desc;
  printf("service %s from %s, %zu methods, descriptor %zu bytes\n", d->name,
         d->proto_file, d->n_methods, d->file_descriptor_len);
  for (size_t i = 0; i < d->n_methods; i++)
    printf("method %s kind %d timeout %lld idempotent %d input %s\n",
           d->methods[i].path, (int)d->methods[i].kind,
           (long long)d->methods[i].timeout_ms, d->methods[i].idempotent,
           d->methods[i].input->name);
  Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
  ts.seconds = 1;
  printf("timestamp packs to %zu bytes\n",
         google__protobuf__timestamp__get_packed_size(&ts));
  return 0;
}

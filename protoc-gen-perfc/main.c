/*
 * main.c — protoc-gen-perfc's entry: CodeGeneratorRequest from stdin,
 * CodeGeneratorResponse to stdout.
 *
 * Room: protoc-gen-perfc (the generator). Touches stdin, stdout, stderr,
 * and (through gen.c) files under stubs=DIR.
 */
#include "buf.h"
#include "gen.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
  (void)argv;
  if (argc > 1) {
    fputs("protoc-gen-perfc: a protoc plugin; run it through protoc:\n"
          "  protoc -I. --c_out=OUT --perfc_out=OUT foo.proto\n"
          "  (parameters: --perfc_opt=templates=DIR,stubs=DIR,openapi=DIR)\n",
          stderr);
    return 2;
  }
  perfc__buf in = {0};
  char chunk[65536];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0)
    perfc__buf_append(&in, chunk, n);
  if (ferror(stdin)) {
    fputs("protoc-gen-perfc: cannot read the request from stdin\n", stderr);
    perfc__buf_free(&in);
    return 1;
  }

  Google__Protobuf__Compiler__CodeGeneratorResponse resp =
      GOOGLE__PROTOBUF__COMPILER__CODE_GENERATOR_RESPONSE__INIT;
  Google__Protobuf__Compiler__CodeGeneratorRequest *req =
      google__protobuf__compiler__code_generator_request__unpack(
          NULL, in.len, (const uint8_t *)(in.data ? in.data : ""));
  perfc__buf_free(&in);
  if (!req) {
    /* Still answer in the protocol, so protoc shows the message. */
    resp.error = perfc__xstrdup(
        "protoc-gen-perfc: stdin is not a CodeGeneratorRequest; run the "
        "plugin through protoc (--perfc_out=DIR)");
  } else {
    perfc__generate(req, &resp);
    google__protobuf__compiler__code_generator_request__free_unpacked(req,
                                                                      NULL);
  }

  size_t len =
      google__protobuf__compiler__code_generator_response__get_packed_size(
          &resp);
  uint8_t *out = perfc__xmalloc(len);
  google__protobuf__compiler__code_generator_response__pack(&resp, out);
  int bad = fwrite(out, 1, len, stdout) != len;
  bad |= fflush(stdout) != 0;
  free(out);
  perfc__gen_response_clear(&resp);
  if (bad) {
    fputs("protoc-gen-perfc: cannot write the response to stdout\n", stderr);
    return 1;
  }
  return 0;
}

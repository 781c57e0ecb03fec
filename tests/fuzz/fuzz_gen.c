/* fuzz_gen.c — protoc-gen-perfc's input: raw bytes decoded as a
 * CodeGeneratorRequest and handed to perfc__generate(), exactly what
 * main.c does with stdin, then the response packed as main.c packs it.
 * main() needed no change: main.c is only I/O around these calls.
 *
 * The `parameter` field is kept only when it names no path option
 * (stubs=, templates=): a fuzzed request must not write or read files
 * outside the process.
 *
 * Room: tests/fuzz. */
#include "buf.h"
#include "gen.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 1 << 20)
    return 0;
  Google__Protobuf__Compiler__CodeGeneratorRequest *req =
      google__protobuf__compiler__code_generator_request__unpack(NULL, size,
                                                                 data);
  if (req == NULL)
    return 0;
  if (req->parameter != NULL && (strstr(req->parameter, "stubs") != NULL ||
                                 strstr(req->parameter, "templates") != NULL))
    req->parameter[0] = '\0';
  Google__Protobuf__Compiler__CodeGeneratorResponse resp =
      GOOGLE__PROTOBUF__COMPILER__CODE_GENERATOR_RESPONSE__INIT;
  perfc__generate(req, &resp);
  size_t len =
      google__protobuf__compiler__code_generator_response__get_packed_size(
          &resp);
  uint8_t *out = malloc(len ? len : 1);
  google__protobuf__compiler__code_generator_response__pack(&resp, out);
  free(out);
  perfc__gen_response_clear(&resp);
  google__protobuf__compiler__code_generator_request__free_unpacked(req, NULL);
  return 0;
}

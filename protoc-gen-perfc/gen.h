/*
 * gen.h — from a CodeGeneratorRequest to a CodeGeneratorResponse: parameter
 * parsing, the model (files, services, methods, options), validation, and
 * rendering through the templates.
 *
 * Room: protoc-gen-perfc (the generator). Reads the request; writes only the
 * response, plus handler scaffolding files under the stubs=DIR directory,
 * and only files that do not exist yet.
 */
#ifndef PERFC_GEN_GEN_H
#define PERFC_GEN_GEN_H

#include "google/protobuf/compiler/plugin.pb-c.h"

#include <stdint.h>

/** Runs the generator. On success fills `resp->file` (and n_file) with
 *  malloc'd entries; on a user-facing error sets `resp->error` to a malloc'd
 *  message. Release what it set with perfc__gen_response_clear(). */
void perfc__generate(
    const Google__Protobuf__Compiler__CodeGeneratorRequest *req,
    Google__Protobuf__Compiler__CodeGeneratorResponse *resp);

/** Frees what perfc__generate() put into `resp`. */
void perfc__gen_response_clear(
    Google__Protobuf__Compiler__CodeGeneratorResponse *resp);

#endif /* PERFC_GEN_GEN_H */

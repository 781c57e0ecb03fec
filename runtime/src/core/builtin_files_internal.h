/*
 * builtin_files_internal.h — the serialized FileDescriptorProtos the
 * runtime carries itself: google/protobuf/{any,api,duration,empty,
 * field_mask,source_context,struct,timestamp,type,wrappers,descriptor}.proto
 * and perfc/options.proto, the files whose protoc-c code is perfc::wkt.
 * Never installed.
 *
 * Room: runtime/src private header (core). The table is generated at build
 * time (runtime/wkt/embed_descriptors.cmake) and compiled into libperfc,
 * where perfc_file_desc_builtin() reads it, and into protoc-gen-perfc,
 * which leaves a file's bytes out of generated code when they equal the
 * table's.
 */
#ifndef PERFC_BUILTIN_FILES_INTERNAL_H
#define PERFC_BUILTIN_FILES_INTERNAL_H

#include "perfc/service.h"

#include <stddef.h>
#include <stdint.h>

/** The files, each once, without source info. */
extern const perfc_file_desc perfc__builtin_files[];
extern const size_t perfc__n_builtin_files;

#endif /* PERFC_BUILTIN_FILES_INTERNAL_H */

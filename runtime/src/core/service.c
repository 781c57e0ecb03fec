/*
 * service.c — lookups over the generated service tables, and the
 * descriptors of the files the runtime carries for them.
 *
 * Room: runtime/src/core; reads perfc_service_desc and the builtin file
 * table (generated, runtime/wkt/embed_descriptors.cmake), touches nothing
 * else.
 */
#include "perfc/service.h"

#include "core/builtin_files_internal.h"

#include <string.h>

const perfc_method_desc *perfc_service_find_method(const perfc_service_desc *svc,
                                                   const char *name) {
  if (svc == NULL || name == NULL)
    return NULL;
  for (size_t i = 0; i < svc->n_methods; i++) {
    const perfc_method_desc *m = &svc->methods[i];
    if (strcmp(m->name, name) == 0 || strcmp(m->path, name) == 0)
      return m;
  }
  return NULL;
}

/* A dozen files, looked up once per generated table at server start
 * (reflection's tables): a linear search is enough. */
const perfc_file_desc *perfc_file_desc_builtin(const char *name) {
  if (name == NULL)
    return NULL;
  for (size_t i = 0; i < perfc__n_builtin_files; i++)
    if (strcmp(perfc__builtin_files[i].name, name) == 0)
      return &perfc__builtin_files[i];
  return NULL;
}

/*
 * service.c — lookups over the generated service tables.
 *
 * Room: runtime/src/core; reads perfc_service_desc, touches nothing else.
 */
#include "perfc/service.h"

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

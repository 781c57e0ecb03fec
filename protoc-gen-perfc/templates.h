/*
 * templates.h — the templates compiled into the generator at build time
 * (templates_embedded.c is written by embed_templates.cmake from
 * the .tmpl files in templates/).
 *
 * Room: protoc-gen-perfc (the generator). Read-only data.
 */
#ifndef PERFC_GEN_TEMPLATES_H
#define PERFC_GEN_TEMPLATES_H

#include <stddef.h>

typedef struct perfc__embedded_template {
  const char *name; /* file name in templates/, "perfc.h.tmpl" */
  const char *text;
  size_t len;
} perfc__embedded_template;

extern const perfc__embedded_template perfc__embedded_templates[];
extern const size_t perfc__n_embedded_templates;

#endif /* PERFC_GEN_TEMPLATES_H */

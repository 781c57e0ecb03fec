# embed_templates.cmake — turns templates/*.tmpl into a C source so the
# generator needs no files at run time.
#   cmake -DTEMPLATE_DIR=<dir> -DOUT=<file.c> -P embed_templates.cmake
#
# Room: protoc-gen-perfc (the generator). Writes only OUT.
file(GLOB templates RELATIVE ${TEMPLATE_DIR} ${TEMPLATE_DIR}/*.tmpl)
list(SORT templates)
set(body "/* Generated from the .tmpl files in templates/ by embed_templates.cmake. DO NOT EDIT. */\n#include \"templates.h\"\n\n")
set(table "")
set(i 0)
foreach(t ${templates})
  file(READ ${TEMPLATE_DIR}/${t} hex HEX)
  string(LENGTH "${hex}" hexlen)
  math(EXPR len "${hexlen} / 2")
  # 16 bytes per line keeps the file diffable and compilers happy.
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," hex "${hex}")
  string(REGEX REPLACE "((0x..,){16})" "\\1\n  " hex "${hex}")
  string(APPEND body "static const char tmpl_${i}[] = {\n  ${hex}0x00};\n\n")
  string(APPEND table "  {\"${t}\", tmpl_${i}, ${len}},\n")
  math(EXPR i "${i} + 1")
endforeach()
string(APPEND body "const perfc__embedded_template perfc__embedded_templates[] = {\n${table}};\n")
string(APPEND body "const size_t perfc__n_embedded_templates = ${i};\n")
# Only touch OUT when it changes, so an unrelated reconfigure rebuilds nothing.
if(EXISTS ${OUT})
  file(READ ${OUT} old)
else()
  set(old "")
endif()
if(NOT old STREQUAL body)
  file(WRITE ${OUT} "${body}")
endif()

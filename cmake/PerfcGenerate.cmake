# PerfcGenerate.cmake — perfc_generate(): protoc with protoc-c and
# protoc-gen-perfc at build time.
#
# Room: cmake/ (generator-owned). Defines one function; touches only the
# build tree (outputs go under the caller's binary directory).
#
#   perfc_generate(OUT_SRCS <var> OUT_HDRS <var>
#                  PROTOS a.proto [sub/b.proto ...]
#                  [IMPORT_DIRS dir ...]        # default: current source dir
#                  [OUT_DIR dir]                # default: <binary dir>/perfc_gen
#                  [PERFC_OPTIONS opt ...]      # e.g. templates=DIR,
#                                               # openapi=DIR
#                  [OUT_INCLUDE_DIR <var>]      # receives OUT_DIR
#                  [TARGET tgt]                 # adds sources + include dir,
#                                               # links what the protos need
#                  [NO_LINK])                   # TARGET without the linking
#
# Each proto is named by its path below the first IMPORT_DIR that holds it
# ("api/v1/user.proto"), as protoc and its imports see it; outputs keep that
# path below OUT_DIR: api/v1/user.pb-c.{c,h} always, and
# api/v1/user.perfc.{c,h} when the file declares a service (detected when
# CMake configures; editing the .proto re-runs that check). perfc's own
# proto/ (for "perfc/options.proto") and the system's well-known types are
# on the import path. Compile the sources with OUT_DIR on the include path
# and link perfc::runtime (which brings perfc::wkt's headers), plus
# perfc::data when a method is cached or invalidates (`(perfc.cache)`,
# `(perfc.invalidate)`: the generated code calls the cache-aside unit). With
# TARGET, perfc_generate() does that linking itself unless NO_LINK is given
# (for targets that link the runtime some other way, such as perfc's tests).
# PERFC_OPTIONS openapi=DIR writes DIR/api/v1/user.openapi.json for each
# proto with `(google.api.http)` routes, as an output of the same command
# (a relative DIR is below the caller's binary directory, not the source).
include_guard(GLOBAL)

if(NOT DEFINED PERFC_PROTO_DIR)
  # In the perfc source tree: cmake/../proto. The installed perfcConfig.cmake
  # sets PERFC_PROTO_DIR to <prefix>/share/perfc/proto before including us.
  get_filename_component(PERFC_PROTO_DIR ${CMAKE_CURRENT_LIST_DIR}/../proto ABSOLUTE)
endif()
set_property(GLOBAL PROPERTY PERFC_GENERATE_PROTO_DIR ${PERFC_PROTO_DIR})

find_program(PERFC_PROTOC protoc REQUIRED)
find_program(PERFC_PROTOC_GEN_C protoc-gen-c REQUIRED)
find_path(PERFC_PROTOBUF_PROTO_DIR google/protobuf/timestamp.proto
  HINTS /usr/include /usr/local/include REQUIRED)
# protobuf-c's options (protobuf-c/protobuf-c.proto: c_package and friends),
# so user protos may import them; optional.
find_path(PERFC_PROTOBUF_C_PROTO_DIR protobuf-c/protobuf-c.proto
  HINTS /usr/include /usr/local/include)

function(perfc_generate)
  cmake_parse_arguments(PG "NO_LINK" "OUT_SRCS;OUT_HDRS;OUT_DIR;OUT_INCLUDE_DIR;TARGET"
                        "PROTOS;IMPORT_DIRS;PERFC_OPTIONS" ${ARGN})
  if(PG_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "perfc_generate: unknown arguments: ${PG_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT PG_PROTOS)
    message(FATAL_ERROR "perfc_generate: PROTOS is empty")
  endif()
  if(NOT PG_IMPORT_DIRS)
    set(PG_IMPORT_DIRS ${CMAKE_CURRENT_SOURCE_DIR})
  endif()
  if(NOT PG_OUT_DIR)
    set(PG_OUT_DIR ${CMAKE_CURRENT_BINARY_DIR}/perfc_gen)
  endif()
  get_property(proto_dir GLOBAL PROPERTY PERFC_GENERATE_PROTO_DIR)

  # The plugin: the in-tree target, the installed package's imported one, or
  # one on PATH.
  if(TARGET protoc-gen-perfc)
    set(plugin $<TARGET_FILE:protoc-gen-perfc>)
    set(plugin_dep protoc-gen-perfc)
  elseif(TARGET perfc::protoc-gen-perfc)
    set(plugin $<TARGET_FILE:perfc::protoc-gen-perfc>)
    set(plugin_dep perfc::protoc-gen-perfc)
  else()
    find_program(PERFC_PROTOC_GEN_PERFC protoc-gen-perfc REQUIRED)
    set(plugin ${PERFC_PROTOC_GEN_PERFC})
    set(plugin_dep ${PERFC_PROTOC_GEN_PERFC})
  endif()

  set(import_args "")
  set(abs_import_dirs "")
  foreach(d ${PG_IMPORT_DIRS})
    get_filename_component(d ${d} ABSOLUTE BASE_DIR ${CMAKE_CURRENT_SOURCE_DIR})
    list(APPEND abs_import_dirs ${d})
    list(APPEND import_args -I${d})
  endforeach()
  list(APPEND import_args -I${proto_dir} -I${PERFC_PROTOBUF_PROTO_DIR})
  if(PERFC_PROTOBUF_C_PROTO_DIR)
    list(APPEND import_args -I${PERFC_PROTOBUF_C_PROTO_DIR})
  endif()

  set(abs_protos "")
  foreach(p ${PG_PROTOS})
    get_filename_component(p ${p} ABSOLUTE BASE_DIR ${CMAKE_CURRENT_SOURCE_DIR})
    list(APPEND abs_protos ${p})
  endforeach()

  set(perfc_param "")
  set(openapi_dir "")
  set(opts "")
  foreach(o ${PG_PERFC_OPTIONS})
    if(o MATCHES "^openapi=(.+)$")
      get_filename_component(openapi_dir ${CMAKE_MATCH_1} ABSOLUTE
                             BASE_DIR ${CMAKE_CURRENT_BINARY_DIR})
      set(o "openapi=${openapi_dir}")
    endif()
    list(APPEND opts ${o})
  endforeach()
  if(opts)
    list(JOIN opts "," perfc_param)
    set(perfc_param "${perfc_param}:")
  endif()

  set(srcs "")
  set(hdrs "")
  set(needs_data FALSE)
  foreach(p ${abs_protos})
    # The proto's name as protoc sees it: its path below an import dir.
    set(rel "")
    foreach(d ${abs_import_dirs})
      file(RELATIVE_PATH r ${d} ${p})
      if(NOT r MATCHES "^\\.\\./" AND NOT IS_ABSOLUTE "${r}")
        set(rel ${r})
        break()
      endif()
    endforeach()
    if(rel STREQUAL "")
      message(FATAL_ERROR "perfc_generate: ${p} is not below any IMPORT_DIRS "
                          "(${abs_import_dirs}); add its root directory")
    endif()
    string(REGEX REPLACE "\\.proto$" "" stem ${rel})
    set(outs ${PG_OUT_DIR}/${stem}.pb-c.c ${PG_OUT_DIR}/${stem}.pb-c.h)
    list(APPEND srcs ${PG_OUT_DIR}/${stem}.pb-c.c)
    list(APPEND hdrs ${PG_OUT_DIR}/${stem}.pb-c.h)
    # protoc-gen-perfc writes nothing for a file without services, and a
    # custom command must produce what it declares; so look for one.
    file(STRINGS ${p} svc_lines REGEX "^[ \t]*service[ \t]+[A-Za-z_]")
    file(STRINGS ${p} cache_lines REGEX "\\(perfc\\.(cache|invalidate)\\)")
    if(cache_lines)
      set(needs_data TRUE)
    endif()
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${p})
    if(svc_lines)
      list(APPEND outs ${PG_OUT_DIR}/${stem}.perfc.c ${PG_OUT_DIR}/${stem}.perfc.h)
      list(APPEND srcs ${PG_OUT_DIR}/${stem}.perfc.c)
      list(APPEND hdrs ${PG_OUT_DIR}/${stem}.perfc.h)
      file(STRINGS ${p} http_lines REGEX "\\(google\\.api\\.http\\)")
      if(openapi_dir AND http_lines)
        list(APPEND outs ${openapi_dir}/${stem}.openapi.json)
      endif()
    endif()
    add_custom_command(
      OUTPUT ${outs}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${PG_OUT_DIR}
      COMMAND ${PERFC_PROTOC} ${import_args}
              --plugin=protoc-gen-c=${PERFC_PROTOC_GEN_C}
              --plugin=protoc-gen-perfc=${plugin}
              --c_out=${PG_OUT_DIR}
              --perfc_out=${perfc_param}${PG_OUT_DIR}
              ${p}
      # protoc names the file by its path below the import dir holding it
      # (`rel`). Any of the listed protos may be imported, so a change to
      # one regenerates all.
      DEPENDS ${abs_protos} ${plugin_dep} ${proto_dir}/perfc/options.proto
      WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR}
      COMMENT "perfc_generate: ${rel}"
      VERBATIM)
  endforeach()

  if(PG_OUT_SRCS)
    set(${PG_OUT_SRCS} ${srcs} PARENT_SCOPE)
  endif()
  if(PG_OUT_HDRS)
    set(${PG_OUT_HDRS} ${hdrs} PARENT_SCOPE)
  endif()
  if(PG_OUT_INCLUDE_DIR)
    set(${PG_OUT_INCLUDE_DIR} ${PG_OUT_DIR} PARENT_SCOPE)
  endif()
  if(PG_TARGET)
    target_sources(${PG_TARGET} PRIVATE ${srcs} ${hdrs})
    target_include_directories(${PG_TARGET} PUBLIC $<BUILD_INTERFACE:${PG_OUT_DIR}>)
    if(NOT PG_NO_LINK)
      target_link_libraries(${PG_TARGET} PUBLIC perfc::runtime)
      if(needs_data)
        target_link_libraries(${PG_TARGET} PUBLIC perfc::data)
      endif()
    endif()
  endif()
endfunction()

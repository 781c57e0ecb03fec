# embed_descriptors.cmake — turns a FileDescriptorSet (protoc -o, without
# source info or imports) into the C table of the files the runtime carries
# itself: perfc/options.proto and the well-known types. Generated files name
# these instead of embedding their bytes (docs/generator.md).
#   cmake -DSET=<set.pb> -DOUT=<file.c> -P embed_descriptors.cmake
#
# Room: runtime/wkt. Writes only OUT. The bytes are protoc's serialization
# of each FileDescriptorProto, the same bytes protoc-gen-perfc gets in its
# CodeGeneratorRequest and would otherwise embed (it compares them before
# leaving a file out).
if(POLICY CMP0130)
  cmake_policy(SET CMP0130 NEW)
endif()
file(READ ${SET} hex HEX)
string(LENGTH "${hex}" hexlen)

# Reads the varint at hex offset `pos` of the hex string `text` into
# `out_value`, the offset after it into `out_pos`.
function(read_varint text pos out_value out_pos)
  set(value 0)
  set(shift 0)
  while(1)
    string(SUBSTRING "${text}" ${pos} 2 b)
    math(EXPR byte "0x${b}")
    math(EXPR pos "${pos} + 2")
    math(EXPR value "${value} + ((${byte} & 127) << ${shift})")
    math(EXPR shift "${shift} + 7")
    if(byte LESS 128)
      break()
    endif()
  endwhile()
  set(${out_value} ${value} PARENT_SCOPE)
  set(${out_pos} ${pos} PARENT_SCOPE)
endfunction()

set(body "/* Generated from the well-known types' and perfc/options.proto's\n * descriptors by runtime/wkt/embed_descriptors.cmake. DO NOT EDIT. */\n#include \"core/builtin_files_internal.h\"\n\n")
set(table "")
set(i 0)
set(pos 0)
while(pos LESS hexlen)
  # FileDescriptorSet.file (field 1, length-delimited): tag 0x0a.
  string(SUBSTRING "${hex}" ${pos} 2 tag)
  if(NOT tag STREQUAL "0a")
    message(FATAL_ERROR "${SET}: not a FileDescriptorSet (tag ${tag} at byte ${pos}/2)")
  endif()
  math(EXPR pos "${pos} + 2")
  read_varint("${hex}" ${pos} len pos)
  math(EXPR hlen "${len} * 2")
  string(SUBSTRING "${hex}" ${pos} ${hlen} file)
  math(EXPR pos "${pos} + ${hlen}")
  # FileDescriptorProto.name (field 1) comes first in protoc's output.
  string(SUBSTRING "${file}" 0 2 ntag)
  if(NOT ntag STREQUAL "0a")
    message(FATAL_ERROR "${SET}: file ${i} does not start with its name")
  endif()
  read_varint("${file}" 2 nlen npos)
  math(EXPR nhlen "${nlen} * 2")
  string(SUBSTRING "${file}" ${npos} ${nhlen} namehex)
  # Proto paths are printable ASCII; anything else would need escaping.
  set(name "")
  math(EXPR nend "${nhlen} - 2")
  foreach(k RANGE 0 ${nend} 2)
    string(SUBSTRING "${namehex}" ${k} 2 b)
    math(EXPR c "0x${b}")
    if(c LESS 33 OR c GREATER 126 OR c EQUAL 34 OR c EQUAL 92)
      message(FATAL_ERROR "${SET}: file ${i}'s name has byte 0x${b}")
    endif()
    string(ASCII ${c} ch)
    string(APPEND name "${ch}")
  endforeach()
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1, " bytes "${file}")
  string(REGEX REPLACE "((0x.., ){12})" "\\1\n  " bytes "${bytes}")
  string(APPEND body "static const uint8_t file_${i}[${len}] = {\n  ${bytes}};\n\n")
  string(APPEND table "    {\"${name}\", file_${i}, sizeof file_${i}},\n")
  math(EXPR i "${i} + 1")
endwhile()
string(APPEND body "const perfc_file_desc perfc__builtin_files[] = {\n${table}};\n")
string(APPEND body "const size_t perfc__n_builtin_files = ${i};\n")
file(WRITE ${OUT} "${body}")

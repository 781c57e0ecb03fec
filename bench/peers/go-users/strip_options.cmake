# strip_options.cmake — cmake -P script: IN (user.proto) to OUT without the
# HTTP and perfc options and their imports. The options add no message,
# field or method (they drive perfc's gateway and cache wiring), so the
# stripped file has the same wire format and service; protoc-gen-go then
# needs no Go package for google/api/annotations.proto or perfc/options.proto.
file(READ "${IN}" text)
string(REGEX REPLACE "import \"(google/api/annotations|perfc/options)\\.proto\";\n" "" text "${text}")
# One option per line in user.proto, with or without a { ... } value.
string(REGEX REPLACE "\n[ \t]*option \\((google\\.api\\.http|perfc\\.[a-z_]+)\\)[^\n]*;" "" text "${text}")
if(text MATCHES "option \\(")
  message(FATAL_ERROR "strip_options: an option this script does not know is left in ${IN}")
endif()
file(WRITE "${OUT}" "${text}")

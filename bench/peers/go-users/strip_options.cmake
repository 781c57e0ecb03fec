# strip_options.cmake — cmake -P script: IN (user.proto) to OUT without the
# HTTP and perfc options and their imports. The options add no message,
# field or method (they drive perfc's gateway and cache wiring), so the
# stripped file has the same wire format and service; protoc-gen-go then
# needs no Go package for google/api/annotations.proto or perfc/options.proto.
# With KEEP_HTTP=1 the google.api.http options and their import stay (only
# perfc's go): the input of protoc-gen-grpc-gateway, which reads the HTTP
# rules from the descriptor and generates no message of its own.
file(READ "${IN}" text)
if(KEEP_HTTP)
  set(imports "perfc/options")
  set(options "perfc\\.[a-z_]+")
else()
  set(imports "google/api/annotations|perfc/options")
  set(options "google\\.api\\.http|perfc\\.[a-z_]+")
endif()
string(REGEX REPLACE "import \"(${imports})\\.proto\";\n" "" text "${text}")
# One option per line in user.proto, with or without a { ... } value.
string(REGEX REPLACE "\n[ \t]*option \\((${options})\\)[^\n]*;" "" text "${text}")
if(KEEP_HTTP)
  string(REGEX REPLACE "option \\(google\\.api\\.http\\)" "" rest "${text}")
else()
  set(rest "${text}")
endif()
if(rest MATCHES "option \\(")
  message(FATAL_ERROR "strip_options: an option this script does not know is left in ${IN}")
endif()
file(WRITE "${OUT}" "${text}")

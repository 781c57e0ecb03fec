# PerfcInstall.cmake — what `cmake --install` puts where, the exported CMake
# package (find_package(perfc)) and the pkg-config file.
#
# Room: cmake/ (generator-owned). Declares install rules only; the targets
# themselves belong to their directories (perfc_runtime to runtime/,
# perfc_wkt to runtime/wkt, protoc-gen-perfc to protoc-gen-perfc/).
#
#   bin/protoc-gen-perfc
#   lib/libperfc.so*, lib/libperfc-data.so*, lib/libperfc-config.so*,
#   lib/libperfc-wkt.so*
#   include/perfc.h, include/perfc/*.h, include/perfc/options.pb-c.h
#   include/google/protobuf/*.pb-c.h, include/google/protobuf/compiler/plugin.pb-c.h
#   share/perfc/proto/perfc/options.proto
#   share/perfc/proto/google/api/{http,annotations}.proto (+ LICENSE)
#   share/perfc/proto/grpc/{health/v1/health,reflection/v1/reflection,
#                           reflection/v1alpha/reflection}.proto
#   lib/cmake/perfc/{perfcConfig,perfcConfigVersion,perfcTargets,PerfcGenerate}.cmake
#   lib/pkgconfig/perfc.pc, perfc-data.pc, perfc-config.pc
include(CMakePackageConfigHelpers)

set(PERFC_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/perfc)
set(PERFC_INSTALL_PROTODIR ${CMAKE_INSTALL_DATADIR}/perfc/proto)

set(_perfc_export_targets "")
if(TARGET perfc_wkt)
  list(APPEND _perfc_export_targets perfc_wkt)
  install(FILES ${PERFC_WKT_HEADERS}
          DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/google/protobuf)
  install(FILES ${PERFC_WKT_PLUGIN_HEADER}
          DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/google/protobuf/compiler)
  install(FILES ${PERFC_WKT_OPTIONS_HEADER}
          DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/perfc)
  install(FILES ${PERFC_WKT_API_HEADERS}
          DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/google/api)
endif()
if(TARGET perfc_runtime)
  # perfc::runtime for consumers, as in the build tree's alias.
  set_target_properties(perfc_runtime PROPERTIES EXPORT_NAME runtime)
  list(APPEND _perfc_export_targets perfc_runtime)
endif()
# The data (hiredis, libpq) and config (libcyaml) link units: perfc::data
# and perfc::config, each linking perfc::runtime.
foreach(_unit data config gateway)
  if(TARGET perfc_${_unit})
    set_target_properties(perfc_${_unit} PROPERTIES EXPORT_NAME ${_unit})
    list(APPEND _perfc_export_targets perfc_${_unit})
  endif()
endforeach()
if(TARGET protoc-gen-perfc)
  list(APPEND _perfc_export_targets protoc-gen-perfc)
endif()

install(TARGETS ${_perfc_export_targets}
  EXPORT perfcTargets
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/runtime/include/
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        FILES_MATCHING PATTERN "*.h")
install(FILES ${PROJECT_SOURCE_DIR}/proto/perfc/options.proto
        DESTINATION ${PERFC_INSTALL_PROTODIR}/perfc)
# google.api.http's annotations (vendored unmodified, with their licence),
# imported by protos that declare HTTP/JSON routes (docs/http-json.md).
install(FILES ${PROJECT_SOURCE_DIR}/proto/google/api/http.proto
              ${PROJECT_SOURCE_DIR}/proto/google/api/annotations.proto
              ${PROJECT_SOURCE_DIR}/proto/google/api/LICENSE
        DESTINATION ${PERFC_INSTALL_PROTODIR}/google/api)
# The gRPC services every perfc server can serve (health, reflection v1 and
# v1alpha), under their usual import paths ("grpc/health/v1/health.proto"),
# for clients that generate their stubs from them.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/proto/grpc
        DESTINATION ${PERFC_INSTALL_PROTODIR}
        FILES_MATCHING PATTERN "*.proto")

install(EXPORT perfcTargets
  NAMESPACE perfc::
  DESTINATION ${PERFC_INSTALL_CMAKEDIR})
configure_package_config_file(
  ${PROJECT_SOURCE_DIR}/cmake/perfcConfig.cmake.in
  ${PROJECT_BINARY_DIR}/cmake/perfcConfig.cmake
  INSTALL_DESTINATION ${PERFC_INSTALL_CMAKEDIR}
  PATH_VARS PERFC_INSTALL_PROTODIR)
write_basic_package_version_file(
  ${PROJECT_BINARY_DIR}/cmake/perfcConfigVersion.cmake
  VERSION ${PROJECT_VERSION}
  # 0.x: every minor release may change the generated-code contract.
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/cmake/perfcConfig.cmake
              ${PROJECT_BINARY_DIR}/cmake/perfcConfigVersion.cmake
              ${PROJECT_SOURCE_DIR}/cmake/PerfcGenerate.cmake
        DESTINATION ${PERFC_INSTALL_CMAKEDIR})

# pkg-config: prefix is found from the .pc file's own place (${pcfiledir}),
# so `cmake --install --prefix DIR` gives a correct file for any DIR.
file(RELATIVE_PATH PERFC_PC_TO_PREFIX
  /perfc-prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /perfc-prefix)
string(REGEX REPLACE "/$" "" PERFC_PC_TO_PREFIX "${PERFC_PC_TO_PREFIX}")
configure_file(${PROJECT_SOURCE_DIR}/cmake/perfc.pc.in
               ${PROJECT_BINARY_DIR}/cmake/perfc.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/cmake/perfc.pc
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
# perfc-data.pc and perfc-config.pc: `pkg-config --libs perfc-data` gives
# -lperfc-data plus what perfc.pc gives (Requires: perfc).
foreach(_unit data config gateway)
  configure_file(${PROJECT_SOURCE_DIR}/cmake/perfc-${_unit}.pc.in
                 ${PROJECT_BINARY_DIR}/cmake/perfc-${_unit}.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/cmake/perfc-${_unit}.pc
          DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endforeach()

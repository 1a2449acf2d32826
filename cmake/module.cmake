# mesh_module(<name> <dir> SOURCES <files...> [PUBLIC <libs...>] [PRIVATE <libs...>])
#
# One static library per module, mesh_<name>, whose headers are reachable only along the
# arrows docs/modules.md draws. No include path holds the source tree; instead each module
# gets two trees of links to its headers, keeping their "<dir>/<file>.h" spelling:
#   build/include/<name>      its public headers (every *.h but *-int.h): PUBLIC, so the
#                             modules that link it, and only those, can include them;
#   build/include-int/<name>  all its headers: PRIVATE, for its own sources, and through
#                             mesh_<name>_internal for its tests and fuzz targets.
# A module that includes a module it does not link, or another module's *-int.h, fails to
# compile ("No such file"); scripts/check-boundaries says which arrow was crossed.
function(mesh_module name dir)
  cmake_parse_arguments(PARSE_ARGV 2 M "" "" "SOURCES;PUBLIC;PRIVATE")
  set(pub ${CMAKE_BINARY_DIR}/include/${name})
  set(int ${CMAKE_BINARY_DIR}/include-int/${name})
  file(REMOVE_RECURSE ${pub} ${int})
  file(MAKE_DIRECTORY ${pub} ${int})
  file(GLOB headers RELATIVE ${CMAKE_SOURCE_DIR} CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/${dir}/*.h)
  foreach(h IN LISTS headers)
    get_filename_component(d ${h} DIRECTORY)
    file(MAKE_DIRECTORY ${int}/${d})
    file(CREATE_LINK ${CMAKE_SOURCE_DIR}/${h} ${int}/${h} SYMBOLIC)
    if(NOT h MATCHES "-int\\.h$")
      file(MAKE_DIRECTORY ${pub}/${d})
      file(CREATE_LINK ${CMAKE_SOURCE_DIR}/${h} ${pub}/${h} SYMBOLIC)
    endif()
  endforeach()
  add_library(mesh_${name} STATIC ${M_SOURCES})
  target_include_directories(mesh_${name} PUBLIC ${pub} PRIVATE ${int})
  target_link_libraries(mesh_${name} PUBLIC ${M_PUBLIC} PRIVATE ${M_PRIVATE})
  add_library(mesh_${name}_internal INTERFACE)
  target_include_directories(mesh_${name}_internal INTERFACE ${int})
  target_link_libraries(mesh_${name}_internal INTERFACE mesh_${name})
  set_property(GLOBAL APPEND PROPERTY MESH_MODULES ${name})
endfunction()

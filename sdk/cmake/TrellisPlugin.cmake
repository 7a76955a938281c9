# trellis_add_plugin(<name> SOURCES <src>... [LIBRARIES <lib>...])
#
# Builds <name>.so as a trellis plugin: a MODULE library linked against the SDK,
# compiled with hidden visibility and linked with a version script
# (trellis-plugin.map) so that the only exported symbol is the entry point,
# with -z defs (no undefined symbol left to resolve from the host) and -z now.
# The file name has no "lib" prefix: the host resolves a module's
# `plugin: <name>` to <plugin-dir>/<name>.so.
set(_TRELLIS_PLUGIN_MAP ${CMAKE_CURRENT_LIST_DIR}/trellis-plugin.map)
function(trellis_add_plugin name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBRARIES" ${ARGN})
  add_library(${name} MODULE ${ARG_SOURCES})
  if(TARGET Trellis::sdk)
    target_link_libraries(${name} PRIVATE Trellis::sdk ${ARG_LIBRARIES})
  else()
    target_link_libraries(${name} PRIVATE trellis_sdk ${ARG_LIBRARIES})
  endif()
  set_target_properties(${name} PROPERTIES
    PREFIX ""
    CXX_VISIBILITY_PRESET hidden
    C_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    CXX_STANDARD 20
    CXX_STANDARD_REQUIRED ON)
  target_link_options(${name} PRIVATE -Wl,-z,defs -Wl,-z,now -Wl,--exclude-libs,ALL
    -Wl,--version-script=${_TRELLIS_PLUGIN_MAP})
  set_property(TARGET ${name} APPEND PROPERTY LINK_DEPENDS ${_TRELLIS_PLUGIN_MAP})
endfunction()

# SPDX-License-Identifier: Apache-2.0
# GObject introspection of libgstfeaturemeta-1.0: GstFeatureMeta-1.0.gir (g-ir-scanner, from the
# public headers and the gtk-doc annotations of the sources) and GstFeatureMeta-1.0.typelib
# (g-ir-compiler), with which PyGObject and other bindings read the meta (python/gstfeaturemeta).
# Needs gobject-introspection-1.0 (Debian: gobject-introspection, libgirepository1.0-dev) and
# GStreamer's Gst-1.0.gir (libgstreamer1.0-dev). Without them the GI files are not built, and
# configure says so.
# Build tree: <build>/lib/girepository-1.0/GstFeatureMeta-1.0.typelib (GI_TYPELIB_PATH) and
# <build>/share/gir-1.0/GstFeatureMeta-1.0.gir. Installed: <libdir>/girepository-1.0 (component
# featuremeta_gir, the gir1.2-gstfeaturemeta-1.0 package) and <datadir>/gir-1.0 (component
# featuremeta_dev, in libgstfeaturemeta-dev), where GI looks for them under /usr.
option(BACKBONE_WITH_INTROSPECTION "backbone: build the GObject introspection data of the meta library when gobject-introspection is found" ON)
set(BACKBONE_HAVE_INTROSPECTION OFF)
set(BACKBONE_HAVE_INTROSPECTION OFF PARENT_SCOPE)
if(NOT BACKBONE_WITH_INTROSPECTION)
  message(STATUS "backbone: GObject introspection off (BACKBONE_WITH_INTROSPECTION=OFF): no GstFeatureMeta-1.0 typelib, "
                 "the Python module gstfeaturemeta cannot work")
  return()
endif()
pkg_check_modules(GOBJECT_INTROSPECTION QUIET gobject-introspection-1.0>=1.66)
if(GOBJECT_INTROSPECTION_FOUND)
  pkg_get_variable(_gi_scanner gobject-introspection-1.0 g_ir_scanner)
  pkg_get_variable(_gi_compiler gobject-introspection-1.0 g_ir_compiler)
  pkg_get_variable(_gi_girdir gobject-introspection-1.0 girdir)
  pkg_get_variable(_gst_girdir gstreamer-1.0 girdir)
  if(NOT _gst_girdir)
    set(_gst_girdir ${_gi_girdir})
  endif()
endif()
if(NOT GOBJECT_INTROSPECTION_FOUND OR NOT EXISTS "${_gi_scanner}" OR NOT EXISTS "${_gi_compiler}")
  message(WARNING "backbone: gobject-introspection-1.0 not found (apt-get install gobject-introspection "
                  "libgirepository1.0-dev): GstFeatureMeta-1.0.gir and .typelib are NOT built, the Python "
                  "module gstfeaturemeta cannot work and its tests are left out")
  return()
endif()
if(NOT EXISTS "${_gst_girdir}/Gst-1.0.gir")
  message(WARNING "backbone: ${_gst_girdir}/Gst-1.0.gir not found (apt-get install libgstreamer1.0-dev "
                  "gir1.2-gstreamer-1.0): GstFeatureMeta-1.0.gir and .typelib are NOT built")
  return()
endif()

set(_gi_name GstFeatureMeta-1.0)
set(_gi_gir ${PROJECT_BINARY_DIR}/share/gir-1.0/${_gi_name}.gir)
set(_gi_typelib ${PROJECT_BINARY_DIR}/lib/girepository-1.0/${_gi_name}.typelib)
set(_gi_files)
foreach(_f IN LISTS _fm_public_headers)
  list(APPEND _gi_files ${_f})
endforeach()
foreach(_f IN LISTS _fm_sources)
  list(APPEND _gi_files ${CMAKE_CURRENT_SOURCE_DIR}/${_f})
endforeach()
# The scanner compiles and runs a small program against the library to read its GTypes: it needs
# the compiler and the flags the sources build with (the .c files include gst/video).
set(_gi_cflags)
foreach(_d IN LISTS GST_INCLUDE_DIRS GST_VIDEO_INCLUDE_DIRS)
  list(APPEND _gi_cflags -I${_d})
endforeach()
list(REMOVE_DUPLICATES _gi_cflags)
add_custom_command(OUTPUT ${_gi_gir}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${PROJECT_BINARY_DIR}/share/gir-1.0
  COMMAND ${CMAKE_COMMAND} -E env CC=${CMAKE_C_COMPILER} "CFLAGS=" "LDFLAGS="
    ${_gi_scanner} --quiet --warn-all --warn-error --no-libtool
    --namespace=GstFeatureMeta --nsversion=1.0
    --identifier-prefix=Gst --symbol-prefix=gst
    --include=Gst-1.0 --add-include-path=${_gst_girdir}
    --pkg=gstreamer-1.0 --pkg-export=gstreamer-featuremeta-1.0
    --c-include=gst/featuremeta/featuremeta.h --c-include=gst/featuremeta/featuredevicememory.h
    --library=gstfeaturemeta-1.0 --library-path=$<TARGET_FILE_DIR:gstfeaturemeta>
    -I${_fm_include} ${_gi_cflags}
    # The dumper registers the meta API type, which needs gst_init() (as GStreamer's own libraries
    # do it: no registry, no plugins).
    "--add-init-section=extern void gst_init(gint*,gchar**);g_setenv(\"GST_REGISTRY_DISABLE\",\"yes\",TRUE);g_setenv(\"GST_PLUGIN_PATH_1_0\",\"\",TRUE);g_setenv(\"GST_PLUGIN_SYSTEM_PATH_1_0\",\"\",TRUE);gst_init(NULL,NULL);"
    --output=${_gi_gir}
    ${_gi_files}
  DEPENDS gstfeaturemeta ${_gi_files}
  COMMENT "g-ir-scanner: ${_gi_name}.gir"
  VERBATIM)
add_custom_command(OUTPUT ${_gi_typelib}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${PROJECT_BINARY_DIR}/lib/girepository-1.0
  COMMAND ${_gi_compiler} --includedir=${_gst_girdir} --includedir=${_gi_girdir}
    --output=${_gi_typelib} ${_gi_gir}
  DEPENDS ${_gi_gir}
  COMMENT "g-ir-compiler: ${_gi_name}.typelib"
  VERBATIM)
add_custom_target(gstfeaturemeta-gir ALL DEPENDS ${_gi_gir} ${_gi_typelib})
set(BACKBONE_HAVE_INTROSPECTION ON)
set(BACKBONE_HAVE_INTROSPECTION ON PARENT_SCOPE)
set(BACKBONE_GI_TYPELIB_DIR ${PROJECT_BINARY_DIR}/lib/girepository-1.0 PARENT_SCOPE)
message(STATUS "backbone: GObject introspection of the meta library: ${_gi_name}.gir and .typelib "
               "(gobject-introspection ${GOBJECT_INTROSPECTION_VERSION})")

if(BACKBONE_INSTALL)
  install(FILES ${_gi_typelib} DESTINATION ${CMAKE_INSTALL_LIBDIR}/girepository-1.0 COMPONENT featuremeta_gir)
  install(FILES ${_gi_gir} DESTINATION ${CMAKE_INSTALL_DATADIR}/gir-1.0 COMPONENT featuremeta_dev)
endif()

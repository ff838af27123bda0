# Install rules and the CMake package Backbone, plus pkg-config for the backbone library.
#
# Layout under the prefix (CMAKE_INSTALL_LIBDIR is lib/<multiarch> for /usr on Debian):
#   lib/<multiarch>/libbackbone.so.0*                 install component backbone_lib
#   lib/<multiarch>/backbone-0/libbackbone-cuda.so    cuda_module (backbone/src/cuda)
#   include/backbone/*.h, libbackbone.so,
#   lib/<multiarch>/pkgconfig/backbone.pc,
#   lib/<multiarch>/cmake/Backbone/*                  backbone_dev
#   lib/<multiarch>/libgstfeaturemeta-1.0.so.0*       featuremeta_lib (gst/)
#   include/gstreamer-1.0/gst/featuremeta/, .so, .pc,
#   lib/<multiarch>/cmake/Backbone/BackboneFeatureMetaTargets*.cmake   featuremeta_dev
#   lib/<multiarch>/gstreamer-1.0/libgstbackbone.so   gst_plugin (plugin/)
#   bin/backbone-infer                                tools (tools/infer)
#   share/backbone/configs/                           configs (top level)
# Each component is one Debian package (packaging/BackboneCPack.cmake).
#
# The CMake package has one export set per component of find_package(Backbone COMPONENTS ...):
# BackboneTargets (Backbone::backbone) and BackboneFeatureMetaTargets (Backbone::featuremeta), so
# that each -dev package holds its own targets file and one installs without the other.
include(CMakePackageConfigHelpers)
install(TARGETS backbone EXPORT BackboneTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT backbone_lib NAMELINK_COMPONENT backbone_dev
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT backbone_dev
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT backbone_lib
  PUBLIC_HEADER DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/backbone COMPONENT backbone_dev
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
set(BACKBONE_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/Backbone)
install(EXPORT BackboneTargets NAMESPACE Backbone:: DESTINATION ${BACKBONE_CMAKE_DIR} FILE BackboneTargets.cmake
  COMPONENT backbone_dev)
export(EXPORT BackboneTargets NAMESPACE Backbone:: FILE ${PROJECT_BINARY_DIR}/BackboneTargets.cmake)
if(TARGET gstfeaturemeta)
  install(EXPORT BackboneFeatureMetaTargets NAMESPACE Backbone:: DESTINATION ${BACKBONE_CMAKE_DIR}
    FILE BackboneFeatureMetaTargets.cmake COMPONENT featuremeta_dev)
  export(EXPORT BackboneFeatureMetaTargets NAMESPACE Backbone::
    FILE ${PROJECT_BINARY_DIR}/BackboneFeatureMetaTargets.cmake)
endif()
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/BackboneConfig.cmake.in
  ${PROJECT_BINARY_DIR}/BackboneConfig.cmake INSTALL_DESTINATION ${BACKBONE_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/BackboneConfigVersion.cmake COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/BackboneConfig.cmake ${PROJECT_BINARY_DIR}/BackboneConfigVersion.cmake
  DESTINATION ${BACKBONE_CMAKE_DIR} COMPONENT backbone_dev)

configure_file(${PROJECT_SOURCE_DIR}/cmake/backbone.pc.in ${PROJECT_BINARY_DIR}/backbone.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/backbone.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT backbone_dev)

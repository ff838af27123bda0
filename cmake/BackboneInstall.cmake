# Install rules and the CMake package Backbone (targets Backbone::backbone), plus pkg-config.
include(CMakePackageConfigHelpers)
install(TARGETS backbone EXPORT BackboneTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  PUBLIC_HEADER DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/backbone
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
set(BACKBONE_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/Backbone)
install(EXPORT BackboneTargets NAMESPACE Backbone:: DESTINATION ${BACKBONE_CMAKE_DIR} FILE BackboneTargets.cmake)
export(EXPORT BackboneTargets NAMESPACE Backbone:: FILE ${PROJECT_BINARY_DIR}/BackboneTargets.cmake)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/BackboneConfig.cmake.in
  ${PROJECT_BINARY_DIR}/BackboneConfig.cmake INSTALL_DESTINATION ${BACKBONE_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/BackboneConfigVersion.cmake COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/BackboneConfig.cmake ${PROJECT_BINARY_DIR}/BackboneConfigVersion.cmake
  DESTINATION ${BACKBONE_CMAKE_DIR})

if(IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(PKG_CONFIG_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
else()
  set(PKG_CONFIG_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(PKG_CONFIG_LIBDIR "${CMAKE_INSTALL_LIBDIR}")
else()
  set(PKG_CONFIG_LIBDIR "\${exec_prefix}/${CMAKE_INSTALL_LIBDIR}")
endif()
configure_file(${PROJECT_SOURCE_DIR}/cmake/backbone.pc.in ${PROJECT_BINARY_DIR}/backbone.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/backbone.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

# BACKBONE_PC_INCLUDEDIR / BACKBONE_PC_LIBDIR: includedir= and libdir= of the project's
# pkg-config files, relative to ${prefix} / ${exec_prefix} unless the install dirs are absolute,
# so that a relocated prefix keeps working.
if(IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(BACKBONE_PC_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
else()
  set(BACKBONE_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(BACKBONE_PC_LIBDIR "${CMAKE_INSTALL_LIBDIR}")
else()
  set(BACKBONE_PC_LIBDIR "\${exec_prefix}/${CMAKE_INSTALL_LIBDIR}")
endif()

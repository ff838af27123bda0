# SPDX-License-Identifier: Apache-2.0
# Read by cpack (CPACK_PROJECT_CONFIG_FILE): refuse to make Debian packages from a build configured
# for another prefix than /usr, whose libdir, plugin folder and pkg-config paths would be wrong.
if(CPACK_GENERATOR STREQUAL "DEB" AND NOT CPACK_BACKBONE_CONFIGURED_PREFIX STREQUAL "/usr")
  message(FATAL_ERROR "backbone: this build is configured for CMAKE_INSTALL_PREFIX=${CPACK_BACKBONE_CONFIGURED_PREFIX}; "
                      "Debian packages need a build configured with -DCMAKE_INSTALL_PREFIX=/usr "
                      "(see packaging/README.md)")
endif()

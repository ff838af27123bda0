# SPDX-License-Identifier: Apache-2.0
# Debian packages with CPack, one per install component (see cmake/BackboneInstall.cmake):
#
#   component        package                     architecture
#   backbone_lib     libbackbone0                <arch>
#   backbone_dev     libbackbone-dev             <arch>
#   featuremeta_lib  libgstfeaturemeta-1.0-0     <arch>
#   featuremeta_dev  libgstfeaturemeta-dev       <arch>
#   featuremeta_gir  gir1.2-gstfeaturemeta-1.0   <arch>   (only with GObject introspection)
#   python           python3-gstfeaturemeta      all      (only with GObject introspection)
#   gst_plugin       gstreamer1.0-backbone       <arch>
#   tools            backbone-tools              <arch>
#   configs          backbone-configs            all
#   cuda_module      libbackbone-cuda0           <arch>   (only when the CUDA module is built)
#
# Build them (packaging/README.md):
#   cmake -S . -B build-deb -G Ninja -DCMAKE_INSTALL_PREFIX=/usr && cmake --build build-deb --target package
# or packaging/build-debs.sh. The .deb files land in <build>/packages/.
#
# Depends: dpkg-shlibdeps names the Debian packages of every shared library a binary needs
# (libtorch1.13, libyaml-cpp0.7, libopencv-*406, libgstreamer1.0-0, ...); the packages' own
# libraries are found in the build tree (-l<build>/lib) and depended on through the component
# dependencies below, which pin the same version ("libbackbone0 (= 0.1.0-1)").
# The CUDA module links cuBLAS 13 from the CUDA toolkit, which no Debian package provides here:
# dpkg-shlibdeps is off for it and its description says what it needs.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME gst-backbone)
set(CPACK_PACKAGE_VENDOR "gst-backbone")
set(CPACK_PACKAGE_CONTACT "gst-backbone maintainers <gst-backbone@users.noreply.github.com>")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
# Left at CPack's default on purpose: CPackDeb prepends any other summary to every component's
# description, and each package's first description line is its own summary here.
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${CMAKE_PROJECT_NAME} built using CMake")
set(CPACK_PACKAGE_HOMEPAGE_URL "${PROJECT_HOMEPAGE_URL}")
set(CPACK_RESOURCE_FILE_LICENSE ${PROJECT_SOURCE_DIR}/LICENSE)
set(CPACK_PACKAGE_DIRECTORY ${PROJECT_BINARY_DIR}/packages)
# The prefix the build was configured for: the packages hold what cmake --install lays out there,
# with the paths compiled in (pkg-config files, the plugin's config folder) matching.
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
set(CPACK_BACKBONE_CONFIGURED_PREFIX ${CMAKE_INSTALL_PREFIX})
set(CPACK_PROJECT_CONFIG_FILE ${CMAKE_CURRENT_LIST_DIR}/CPackProjectConfig.cmake)
if(NOT CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  message(STATUS "backbone: Debian packages need -DCMAKE_INSTALL_PREFIX=/usr (now ${CMAKE_INSTALL_PREFIX}); "
                 "the package target refuses to run otherwise")
endif()

set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # <name>_<version>_<arch>.deb
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)      # version 0.1.0-1
set(CPACK_DEBIAN_PACKAGE_SOURCE gst-backbone)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS_PRIVATE_DIRS ${PROJECT_BINARY_DIR}/lib)
set(CPACK_DEBIAN_ENABLE_COMPONENT_DEPENDS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)  # DEBIAN/shlibs for the two libraries
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY ">=")

set(CPACK_COMPONENTS_ALL backbone_lib backbone_dev)
if(TARGET gstfeaturemeta)
  list(APPEND CPACK_COMPONENTS_ALL featuremeta_lib featuremeta_dev)
endif()
if(BACKBONE_HAVE_INTROSPECTION)
  list(APPEND CPACK_COMPONENTS_ALL featuremeta_gir python)
endif()
if(TARGET gstbackbone)
  list(APPEND CPACK_COMPONENTS_ALL gst_plugin)
endif()
if(TARGET backbone-infer)
  list(APPEND CPACK_COMPONENTS_ALL tools)
endif()
list(APPEND CPACK_COMPONENTS_ALL configs)
if(TARGET backbone-cuda)
  list(APPEND CPACK_COMPONENTS_ALL cuda_module)
endif()

set(_v "${PROJECT_VERSION}-${CPACK_DEBIAN_PACKAGE_RELEASE}")  # the Debian version

set(CPACK_DEBIAN_BACKBONE_LIB_PACKAGE_NAME libbackbone0)
set(CPACK_DEBIAN_BACKBONE_LIB_PACKAGE_SECTION libs)
set(CPACK_COMPONENT_BACKBONE_LIB_DESCRIPTION "detectron2's ResNet backbone in C++ (shared library)
libbackbone computes the feature maps of detectron2's ResNet backbones (R-18 .. R-152, ResNeXt,
dilated and deformable stages, and detectron2's FPN and RetinaNet pyramids on them) from detectron2's
YAML configs and model-zoo checkpoints, on the
CPU with its oneDNN engine (fp32 and bf16), LibTorch or OpenCV DNN. The CUDA module is in
libbackbone-cuda0.")

set(CPACK_DEBIAN_BACKBONE_DEV_PACKAGE_NAME libbackbone-dev)
set(CPACK_DEBIAN_BACKBONE_DEV_PACKAGE_SECTION libdevel)
set(CPACK_COMPONENT_BACKBONE_DEV_DEPENDS backbone_lib)
set(CPACK_COMPONENT_BACKBONE_DEV_DESCRIPTION "detectron2's ResNet backbone in C++ (development files)
Headers, the link library, pkg-config file backbone.pc and the CMake package Backbone
(find_package(Backbone COMPONENTS backbone featuremeta); the featuremeta component also needs
libgstfeaturemeta-dev).")

set(CPACK_DEBIAN_FEATUREMETA_LIB_PACKAGE_NAME libgstfeaturemeta-1.0-0)
set(CPACK_DEBIAN_FEATUREMETA_LIB_PACKAGE_SECTION libs)
set(CPACK_COMPONENT_FEATUREMETA_LIB_DESCRIPTION "GStreamer feature meta of gst-backbone (shared library)
GstFeatureMeta carries a backbone's multi-level feature maps on GStreamer buffers; downstream
elements and applications read it with this C library, which needs GStreamer alone.")

set(CPACK_DEBIAN_FEATUREMETA_DEV_PACKAGE_NAME libgstfeaturemeta-dev)
set(CPACK_DEBIAN_FEATUREMETA_DEV_PACKAGE_SECTION libdevel)
set(CPACK_COMPONENT_FEATUREMETA_DEV_DEPENDS featuremeta_lib)
set(CPACK_DEBIAN_FEATUREMETA_DEV_PACKAGE_DEPENDS "libgstreamer1.0-dev (>= 1.22), libgstreamer-plugins-base1.0-dev (>= 1.22)")
set(CPACK_DEBIAN_FEATUREMETA_DEV_PACKAGE_SUGGESTS "libbackbone-dev (= ${_v})")
set(CPACK_COMPONENT_FEATUREMETA_DEV_DESCRIPTION "GStreamer feature meta of gst-backbone (development files)
Header <gst/featuremeta/featuremeta.h>, the link library, pkg-config file
gstreamer-featuremeta-1.0 and the CMake targets of find_package(Backbone COMPONENTS featuremeta)
(the package's config file is in libbackbone-dev), and the GObject introspection XML
GstFeatureMeta-1.0.gir when built with it.")
if(BACKBONE_HAVE_INTROSPECTION)
  list(APPEND CPACK_COMPONENT_FEATUREMETA_DEV_DEPENDS featuremeta_gir)
endif()

# GObject introspection data: the typelib (architecture-specific, in the multiarch libdir); the
# .gir is in the -dev package, as Debian does.
set(CPACK_DEBIAN_FEATUREMETA_GIR_PACKAGE_NAME gir1.2-gstfeaturemeta-1.0)
set(CPACK_DEBIAN_FEATUREMETA_GIR_PACKAGE_SECTION introspection)
set(CPACK_COMPONENT_FEATUREMETA_GIR_DEPENDS featuremeta_lib)
set(CPACK_DEBIAN_FEATUREMETA_GIR_PACKAGE_DEPENDS "gir1.2-gstreamer-1.0 (>= 1.22), gir1.2-glib-2.0")
set(CPACK_COMPONENT_FEATUREMETA_GIR_DESCRIPTION "GObject introspection data of the GStreamer feature meta of gst-backbone
GstFeatureMeta-1.0.typelib, with which PyGObject and other language bindings read the backbone
feature maps (GstFeatureMeta) on GStreamer buffers.")

# The Python module: pure Python (architecture all), in Debian's python3 module folder.
# postinst/prerm byte-compile and clean it as dh_python3's scripts do (py3compile / py3clean).
set(CPACK_DEBIAN_PYTHON_PACKAGE_NAME python3-gstfeaturemeta)
set(CPACK_DEBIAN_PYTHON_PACKAGE_SECTION python)
set(CPACK_DEBIAN_PYTHON_PACKAGE_ARCHITECTURE all)
set(CPACK_COMPONENT_PYTHON_DEPENDS featuremeta_gir)
set(CPACK_DEBIAN_PYTHON_PACKAGE_DEPENDS "python3 (>= 3.9), python3-gi, python3-gst-1.0, python3-numpy")
set(CPACK_DEBIAN_PYTHON_PACKAGE_RECOMMENDS "gstreamer1.0-backbone (= ${_v})")
set(CPACK_DEBIAN_PYTHON_PACKAGE_CONTROL_EXTRA ${CMAKE_CURRENT_LIST_DIR}/python3-gstfeaturemeta/postinst
    ${CMAKE_CURRENT_LIST_DIR}/python3-gstfeaturemeta/prerm)
set(CPACK_DEBIAN_PYTHON_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)
set(CPACK_COMPONENT_PYTHON_DESCRIPTION "backbone feature maps of GStreamer buffers as numpy arrays (Python 3)
The module gstfeaturemeta reads the feature maps that gst-backbone's resnetbackbone element
attaches to video buffers: gstfeaturemeta.levels(buffer) gives every level as a numpy array,
gstfeaturemeta.mapped(buffer) zero-copy read-only views, gstfeaturemeta.meta(buffer) the frame
geometry and the conversions between frame pixels and feature cells.")

set(CPACK_DEBIAN_GST_PLUGIN_PACKAGE_NAME gstreamer1.0-backbone)
set(CPACK_DEBIAN_GST_PLUGIN_PACKAGE_SECTION video)
set(CPACK_COMPONENT_GST_PLUGIN_DEPENDS backbone_lib featuremeta_lib)
set(CPACK_DEBIAN_GST_PLUGIN_PACKAGE_RECOMMENDS "backbone-configs (= ${_v}), gstreamer1.0-plugins-base")
set(CPACK_COMPONENT_GST_PLUGIN_DESCRIPTION "GStreamer plugin of gst-backbone: resnetbackbone, featuresink, featureoverlay
resnetbackbone runs detectron2's ResNet backbone on every video frame and attaches the feature
maps to the buffer (GstFeatureMeta); featuresink writes them to safetensors files and
featureoverlay draws one level's activation energy over the video.")

set(CPACK_DEBIAN_TOOLS_PACKAGE_NAME backbone-tools)
set(CPACK_DEBIAN_TOOLS_PACKAGE_SECTION science)
set(CPACK_COMPONENT_TOOLS_DEPENDS backbone_lib)
if(TARGET backbone-extract)  # reads the meta and runs the installed plugin
  list(APPEND CPACK_COMPONENT_TOOLS_DEPENDS featuremeta_lib gst_plugin)
endif()
set(CPACK_DEBIAN_TOOLS_PACKAGE_RECOMMENDS "backbone-configs (= ${_v})")
set(CPACK_COMPONENT_TOOLS_DESCRIPTION "command-line tools of gst-backbone
backbone-infer runs detectron2's ResNet backbone on an image or a .npy array and writes each
feature map as .npy; backbone-extract extracts the features of many videos through the
GStreamer plugin; backbone-bench times this project's engines beside PyTorch and OpenCV DNN
(its Python peers need python3-torch and python3-torchvision).")
set(CPACK_DEBIAN_TOOLS_PACKAGE_SUGGESTS "python3-torch, python3-torchvision")

set(CPACK_DEBIAN_CONFIGS_PACKAGE_NAME backbone-configs)
set(CPACK_DEBIAN_CONFIGS_PACKAGE_SECTION science)
set(CPACK_DEBIAN_CONFIGS_PACKAGE_ARCHITECTURE all)
set(CPACK_COMPONENT_CONFIGS_DESCRIPTION "detectron2 backbone configs for gst-backbone
YAML configs (R-18 .. R-152, X-101-32x8d, R-50-DC5, deformable R-50, and the FPN backbones
R-50-FPN, R-101-FPN, X-101-32x8d-FPN, RetinaNet-R-50-FPN) in /usr/share/backbone/configs,
in detectron2's format.")

set(CPACK_DEBIAN_CUDA_MODULE_PACKAGE_NAME libbackbone-cuda0)
set(CPACK_DEBIAN_CUDA_MODULE_PACKAGE_SECTION libs)
set(CPACK_COMPONENT_CUDA_MODULE_DEPENDS backbone_lib)
set(CPACK_DEBIAN_CUDA_MODULE_PACKAGE_SHLIBDEPS OFF)  # cuBLAS and cuDNN belong to no Debian package here
if(TARGET backbone-cuda)
  set(_cuda_note "CUDA ${CUDAToolkit_VERSION_MAJOR}")
  set(CPACK_COMPONENT_CUDA_MODULE_DESCRIPTION "CUDA module of libbackbone (needs ${_cuda_note} cuBLAS, cuDNN 9 and the NVIDIA driver)
libbackbone loads this module only when a CUDA device is asked for; everything else runs without it.
It needs libcublas.so.${CUDAToolkit_VERSION_MAJOR} and libcublasLt.so.${CUDAToolkit_VERSION_MAJOR} (NVIDIA's
CUDA ${CUDAToolkit_VERSION_MAJOR} toolkit or its cuBLAS runtime package, found in ${CUDAToolkit_LIBRARY_DIR}
or the linker's path), libcudnn.so.9 (cuDNN 9, e.g. NVIDIA's cudnn9-cuda-${CUDAToolkit_VERSION_MAJOR} package or
PyTorch's nvidia-cudnn wheel) and libcuda.so.1 from the NVIDIA driver; no Debian package provides them, so
the package does not depend on them.")
endif()

include(CPack)

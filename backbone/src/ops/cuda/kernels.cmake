# SPDX-License-Identifier: Apache-2.0
# The NHWC kernels of kernels.h (the CUDA engine's own kernels besides cuDNN), in backbone-cuda-kernels.
target_sources(backbone-cuda-kernels PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/nhwc_kernels.cu
  ${CMAKE_CURRENT_LIST_DIR}/deform_conv_nhwc.cu
  ${CMAKE_CURRENT_LIST_DIR}/fpn_kernels.cu)

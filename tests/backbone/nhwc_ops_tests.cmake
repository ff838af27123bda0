# SPDX-License-Identifier: Apache-2.0
# NHWC kernels of the CUDA module: their CPU twins (always, label cpu) and, with the CUDA toolkit, the
# kernels against the twins (label gpu; they skip with the reason where no device is present).
backbone_add_test(nhwc_ops_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/nhwc_ops_test.cpp
                  ${CMAKE_CURRENT_LIST_DIR}/nhwc_fpn_ops_test.cpp)
if(BACKBONE_HAVE_CUDA AND EXISTS ${CMAKE_CURRENT_LIST_DIR}/nhwc_kernels_cuda_test.cpp)
  backbone_add_test(nhwc_kernels_cuda_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/nhwc_kernels_cuda_test.cpp
                    LABELS gpu LIBS backbone-cuda-kernels)
endif()

# SPDX-License-Identifier: Apache-2.0
# Frame preprocessing on the GPU. cuda_frame_test (cpu): the kernel's arguments and its CPU twin
# against preprocess_frame, bit for bit. cuda_frame_cuda_test (gpu): the kernel against the twin,
# host and device frames, every storage type; skipped with the reason where there is no GPU.
backbone_add_test(cuda_frame_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/cuda_frame_test.cpp)
if(BACKBONE_HAVE_CUDA)
  backbone_add_test(cuda_frame_cuda_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/cuda_frame_cuda_test.cpp
    LABELS gpu LIBS backbone-cuda-kernels)
endif()

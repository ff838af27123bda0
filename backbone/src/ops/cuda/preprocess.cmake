# SPDX-License-Identifier: Apache-2.0
# Frame preprocessing on the GPU: one kernel from a video frame to the engine's NHWC input
# (FramePreprocessor, ops/cuda/preprocess_kernel.h); its CPU twin is frame/cuda_frame.cpp in libbackbone.
target_sources(backbone-cuda-kernels PRIVATE ${CMAKE_CURRENT_LIST_DIR}/preprocess_kernel.cu)

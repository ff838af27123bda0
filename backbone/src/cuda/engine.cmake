# SPDX-License-Identifier: Apache-2.0
# The engine of the CUDA module (module_api.h's engine_* entries): cuDNN convolutions and this
# project's NHWC kernels (backbone-cuda-kernels), plans, CUDA graphs and the output pool; fpn.cpp:
# the layers detectron2's FPN adds (top-down upsample + add, LastLevelP6P7's ReLU).
target_sources(backbone-cuda PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/engine/engine.cpp
  ${CMAKE_CURRENT_LIST_DIR}/engine/fpn.cpp
  ${CMAKE_CURRENT_LIST_DIR}/engine/layout.cpp)

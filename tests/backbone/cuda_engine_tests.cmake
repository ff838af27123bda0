# SPDX-License-Identifier: Apache-2.0
# engine=cuda. cuda_engine_test (cpu): the network description and its CPU executor against
# detectron2's goldens, device refusals, and the FPN's description, layout and executor against the
# LibTorch engine (cuda_engine_fpn_test.cpp); builds and runs without CUDA. cuda_engine_gpu_test (gpu):
# the engine on a GPU, skipped with the reason where there is none.
# cuda/engine/layout.cpp (the module engine's host-side layout, no CUDA) is compiled in to be tested.
backbone_add_test(cuda_engine_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/cuda_engine_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/cuda_engine_fpn_test.cpp
  ${PROJECT_SOURCE_DIR}/backbone/src/cuda/engine/layout.cpp
  LIBS nlohmann_json::nlohmann_json)
if(BACKBONE_HAVE_CUDA)
  backbone_add_test(cuda_engine_gpu_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/cuda_engine_gpu_test.cpp LABELS gpu
    LIBS nlohmann_json::nlohmann_json)
endif()

// SPDX-License-Identifier: Apache-2.0
// The torchvision.ops.deform_conv2d reference cases of tests/data/deform (made by
// tests/data/make_deform.py), shared by the CPU and CUDA tests.
#pragma once

#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "backbone/npy.h"
#include "backbone/ops.h"
#include "backbone/tensor.h"

namespace backbone::test {

inline const std::vector<std::string> kDeformCases = {
    "basic",         "stride2_mask_bias", "dilation2_mask",           "groups2_dg2_mask_bias", "dg2_rect_kernel_bias",
    "large_offsets_mask", "edges_mask", "pointwise_stride2_groups2", "resnext_like",          "big_k_mask_bias"};

inline std::string deform_data_path(const std::string& file) {
  return std::string(BACKBONE_TEST_DATA_DIR) + "/deform/" + file;
}

inline bool file_exists(const std::string& path) { return std::ifstream(path).good(); }

struct DeformCase {
  Tensor input, offset, weight, mask, bias, out;
  ops::DeformConv2dParams params;
};

// <name>_params.npy holds stride h/w, pad h/w, dilation h/w, groups, deformable groups, has mask, has bias.
inline DeformCase load_deform_case(const std::string& name) {
  DeformCase c;
  c.input = load_npy(deform_data_path(name + "_input.npy"));
  c.offset = load_npy(deform_data_path(name + "_offset.npy"));
  c.weight = load_npy(deform_data_path(name + "_weight.npy"));
  c.out = load_npy(deform_data_path(name + "_out.npy"));
  const Tensor params = load_npy(deform_data_path(name + "_params.npy"));
  EXPECT_EQ(params.numel(), 10);
  const int64_t* p = params.data_ptr<int64_t>();
  c.params.stride_h = p[0];
  c.params.stride_w = p[1];
  c.params.pad_h = p[2];
  c.params.pad_w = p[3];
  c.params.dilation_h = p[4];
  c.params.dilation_w = p[5];
  c.params.groups = p[6];
  c.params.deformable_groups = p[7];
  if (p[8]) c.mask = load_npy(deform_data_path(name + "_mask.npy"));
  if (p[9]) c.bias = load_npy(deform_data_path(name + "_bias.npy"));
  EXPECT_EQ(file_exists(deform_data_path(name + "_mask.npy")), p[8] != 0);
  EXPECT_EQ(file_exists(deform_data_path(name + "_bias.npy")), p[9] != 0);
  return c;
}

}  // namespace backbone::test

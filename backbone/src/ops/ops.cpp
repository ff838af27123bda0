// SPDX-License-Identifier: Apache-2.0
// Front ends of the operators in backbone/ops.h, in the style of torchvision's csrc/ops: check
// every argument (naming it, with the expected and the found value), make the inputs contiguous,
// allocate the output and dispatch on the device in ONE place.
#include "backbone/ops.h"

#include <sstream>
#include <string>

#include "backbone/error.h"
#include "cuda/loader.h"
#include "ops/cpu/deform_conv2d_kernel.h"

namespace backbone::ops {
namespace {

// Floor division for a positive divisor (C++ '/' truncates toward zero).
int64_t floor_div(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}

template <typename... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  std::ostringstream os;
  os << "deform_conv2d: ";
  (os << ... << parts);
  throw ShapeError(os.str());
}

template <typename... Parts>
void check(bool ok, const Parts&... parts) {
  if (!ok) fail(parts...);
}

// A defined float32 tensor of `dims` dimensions on `device` (the input's, once the input passed).
void check_tensor(const Tensor& t, const char* name, int64_t dims, const char* layout, const Device* device) {
  check(t.defined(), name, " is undefined: expected a float32 tensor ", layout);
  check(t.dtype() == DType::Float32, name, " must be float32, found ", dtype_name(t.dtype()));
  check(t.dim() == dims, name, " must be ", dims, "-D ", layout, ", found shape ", shape_str(t.shape()));
  if (device)
    check(t.device() == *device, name, " is on ", t.device().str(), " but input is on ", device->str(),
          ": all tensors must be on one device");
}

}  // namespace

int64_t conv_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation) {
  if (stride <= 0 || dilation <= 0 || kernel <= 0 || pad < 0 || in < 0) {
    std::ostringstream os;
    os << "conv_output_size: expected in >= 0, kernel > 0, stride > 0, pad >= 0, dilation > 0, found in=" << in
       << " kernel=" << kernel << " stride=" << stride << " pad=" << pad << " dilation=" << dilation;
    throw ShapeError(os.str());
  }
  return floor_div(in + 2 * pad - dilation * (kernel - 1) - 1, stride) + 1;
}

Tensor deform_conv2d(const Tensor& input_, const Tensor& offset_, const Tensor& weight_, const Tensor& mask_,
                     const Tensor& bias_, const DeformConv2dParams& params) {
  const DeformConv2dParams& p = params;
  check_tensor(input_, "input", 4, "[N, C, H, W]", nullptr);
  const Device device = input_.device();
  check_tensor(weight_, "weight", 4, "[O, C / groups, kh, kw]", &device);
  check_tensor(offset_, "offset", 4, "[N, 2 * deformable_groups * kh * kw, Ho, Wo]", &device);
  if (mask_.defined()) check_tensor(mask_, "mask", 4, "[N, deformable_groups * kh * kw, Ho, Wo]", &device);
  if (bias_.defined()) check_tensor(bias_, "bias", 1, "[O]", &device);

  check(p.stride_h > 0 && p.stride_w > 0, "stride must be positive, found stride_h: ", p.stride_h,
        " stride_w: ", p.stride_w);
  check(p.pad_h >= 0 && p.pad_w >= 0, "padding must be non-negative, found pad_h: ", p.pad_h, " pad_w: ", p.pad_w);
  check(p.dilation_h > 0 && p.dilation_w > 0, "dilation must be positive, found dilation_h: ", p.dilation_h,
        " dilation_w: ", p.dilation_w);
  check(p.groups > 0, "groups must be positive, found ", p.groups);
  check(p.deformable_groups > 0, "deformable_groups must be positive, found ", p.deformable_groups);

  const int64_t batch = input_.size(0), channels = input_.size(1);
  const int64_t height = input_.size(2), width = input_.size(3);
  const int64_t out_channels = weight_.size(0), kh = weight_.size(2), kw = weight_.size(3);
  check(kh > 0 && kw > 0, "weight kernel size must be positive, found weight_h: ", kh, " weight_w: ", kw,
        " (weight.shape ", shape_str(weight_.shape()), ")");

  check(channels % p.groups == 0, "input.shape[1] (channels) = ", channels, " is not divisible by groups = ",
        p.groups);
  check(weight_.size(1) * p.groups == channels, "weight.shape[1] is not valid: got: ", weight_.size(1),
        " expected: ", channels / p.groups, " (input channels ", channels, " / groups ", p.groups, ")");
  check(out_channels % p.groups == 0, "weight.shape[0] (out channels) = ", out_channels,
        " is not divisible by groups = ", p.groups);
  check(channels % p.deformable_groups == 0, "input.shape[1] (channels) = ", channels,
        " is not divisible by deformable_groups = ", p.deformable_groups);

  const int64_t out_h = conv_output_size(height, kh, p.stride_h, p.pad_h, p.dilation_h);
  const int64_t out_w = conv_output_size(width, kw, p.stride_w, p.pad_w, p.dilation_w);
  check(out_h > 0 && out_w > 0, "Calculated output size too small - out_h: ", out_h, " out_w: ", out_w,
        " (input ", height, "x", width, ", kernel ", kh, "x", kw, ", stride ", p.stride_h, "x", p.stride_w,
        ", padding ", p.pad_h, "x", p.pad_w, ", dilation ", p.dilation_h, "x", p.dilation_w, ")");

  const int64_t taps = kh * kw;
  check(offset_.size(0) == batch, "offset.shape[0] is not valid: got: ", offset_.size(0), " expected: ", batch,
        " (input.shape[0])");
  check(offset_.size(1) == 2 * p.deformable_groups * taps, "offset.shape[1] is not valid: got: ", offset_.size(1),
        " expected: ", 2 * p.deformable_groups * taps, " (2 * deformable_groups ", p.deformable_groups, " * kernel ",
        kh, "x", kw, ")");
  check(offset_.size(2) == out_h && offset_.size(3) == out_w, "offset output dims: got: (", offset_.size(2), ", ",
        offset_.size(3), ") expected: (", out_h, ", ", out_w, ") (the computed output size)");
  if (mask_.defined()) {
    check(mask_.size(0) == batch, "mask.shape[0] is not valid: got: ", mask_.size(0), " expected: ", batch,
          " (input.shape[0])");
    check(mask_.size(1) == p.deformable_groups * taps, "mask.shape[1] is not valid: got: ", mask_.size(1),
          " expected: ", p.deformable_groups * taps, " (deformable_groups ", p.deformable_groups, " * kernel ", kh,
          "x", kw, ")");
    check(mask_.size(2) == out_h && mask_.size(3) == out_w, "mask output dims: got: (", mask_.size(2), ", ",
          mask_.size(3), ") expected: (", out_h, ", ", out_w, ") (the computed output size)");
  }
  if (bias_.defined())
    check(bias_.size(0) == out_channels, "bias.shape[0] is not valid: got: ", bias_.size(0),
          " expected: ", out_channels, " (weight.shape[0])");

  const Tensor input = input_.contiguous();
  const Tensor offset = offset_.contiguous();
  const Tensor weight = weight_.contiguous();
  const Tensor mask = mask_.defined() ? mask_.contiguous() : Tensor();
  const Tensor bias = bias_.defined() ? bias_.contiguous() : Tensor();
  Tensor out = Tensor::empty({batch, out_channels, out_h, out_w}, DType::Float32, device);
  if (batch == 0) return out;

  // The one place where the device picks the kernel.
  switch (device.type) {
    case Device::Type::CPU:
      detail::deform_conv2d_cpu(input, offset, weight, mask, bias, p, out);
      break;
    case Device::Type::CUDA:
      detail::cuda_deform_conv2d(input, offset, weight, mask, bias, p, out);
      break;
  }
  return out;
}

}  // namespace backbone::ops

// SPDX-License-Identifier: Apache-2.0
// run-backbone DATA_DIR: the installed backbone library on one frame, against detectron2.
//
// DATA_DIR holds tests/data/plugin/: narrow.yaml and narrow.pth (a narrow R-50), frame_rgb.npy (a
// 64x48 RGB frame) and d2_res2..5.npy, detectron2's features of that frame (make_plugin.py). The
// frame goes through the public frame API (INPUT.FORMAT BGR, PIXEL_MEAN/STD, no resize) and the
// LibTorch engine; every level must match detectron2 within 1e-4 of its largest magnitude.
#include <backbone/backbone.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <string>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DATA_DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  try {
    backbone::Config cfg = backbone::load_config(dir + "/narrow.yaml");
    backbone::ResNet model = backbone::build_resnet_backbone(cfg);
    backbone::load_checkpoint(model, dir + "/narrow.pth");
    auto engine = backbone::create_engine(model, {"libtorch", backbone::Device::cpu(), 1});

    backbone::Tensor frame = backbone::load_npy(dir + "/frame_rgb.npy");  // [48, 64, 3] uint8
    backbone::FrameView view;
    view.format = backbone::PixelFormat::RGB;
    view.height = frame.shape()[0];
    view.width = frame.shape()[1];
    view.planes[0] = static_cast<const uint8_t*>(frame.data());
    view.strides[0] = view.width * 3;
    backbone::FramePreprocessOptions options;
    options.input_format = cfg.get_string("INPUT.FORMAT");
    options.pixel_mean = cfg.get_float_list("MODEL.PIXEL_MEAN");
    options.pixel_std = cfg.get_float_list("MODEL.PIXEL_STD");
    backbone::PreprocessResult input = backbone::preprocess_frame(view, options);

    backbone::FeatureMaps features = engine->forward(input.tensor);
    if (features.size() != 4) {
      std::fprintf(stderr, "expected 4 feature maps (res2..res5), got %zu\n", features.size());
      return 1;
    }
    int failures = 0;
    for (const auto& [name, tensor] : features) {
      backbone::Tensor got = tensor.contiguous();
      backbone::Tensor want = backbone::load_npy(dir + "/d2_" + name + ".npy");
      if (got.shape() != want.shape()) {
        std::fprintf(stderr, "%s: shape differs from detectron2's\n", name.c_str());
        ++failures;
        continue;
      }
      const float* g = got.data_ptr<float>();
      const float* w = want.data_ptr<float>();
      double max_ref = 0.0, max_diff = 0.0;
      for (int64_t i = 0; i < got.numel(); ++i) {
        max_ref = std::max(max_ref, std::fabs(static_cast<double>(w[i])));
        max_diff = std::max(max_diff, std::fabs(static_cast<double>(g[i]) - w[i]));
      }
      const bool ok = max_ref > 0.0 && max_diff <= 1e-4 * max_ref;
      std::printf("%s [%lld, %lld, %lld, %lld] max |x| %.4g, max |x - detectron2| %.3g %s\n", name.c_str(),
                  static_cast<long long>(got.shape()[0]), static_cast<long long>(got.shape()[1]),
                  static_cast<long long>(got.shape()[2]), static_cast<long long>(got.shape()[3]), max_ref,
                  max_diff, ok ? "ok" : "FAILED");
      if (!ok) ++failures;
    }
    return failures == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "run-backbone: %s\n", e.what());
    return 1;
  }
}

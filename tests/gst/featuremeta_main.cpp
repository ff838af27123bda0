// SPDX-License-Identifier: Apache-2.0
// main() of featuremeta_test: GoogleTest with gst_init, and gst_deinit at the end so that a run
// under GST_TRACERS=leaks reports (and, with G_DEBUG=fatal-warnings, fails on) any object left alive.
#include <gst/gst.h>
#include <gtest/gtest.h>

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  gst_init(&argc, &argv);
  int ret = RUN_ALL_TESTS();
  gst_deinit();
  return ret;
}

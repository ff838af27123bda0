// SPDX-License-Identifier: Apache-2.0
// main() of the GStreamer tests: GoogleTest plus gst_init.
#include <gst/gst.h>
#include <gtest/gtest.h>

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  gst_init(&argc, &argv);
  const int result = RUN_ALL_TESTS();
  // Lets GST_TRACERS=leaks report whatever is still alive.
  gst_deinit();
  return result;
}

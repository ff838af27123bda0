/* SPDX-License-Identifier: Apache-2.0
 *
 * The `backbone` plugin: detectron2's ResNet backbone features for GStreamer.
 */
#include <gst/gst.h>

#include "featureoverlay.h"
#include "featuresink.h"
#include "resnetbackbone.h"

static gboolean
plugin_init (GstPlugin * plugin)
{
  gboolean ret = FALSE;

  ret |= GST_ELEMENT_REGISTER (resnetbackbone, plugin);
  ret |= GST_ELEMENT_REGISTER (featuresink, plugin);
  ret |= GST_ELEMENT_REGISTER (featureoverlay, plugin);

  return ret;
}

GST_PLUGIN_DEFINE (GST_VERSION_MAJOR, GST_VERSION_MINOR, backbone,
    "detectron2's ResNet backbone: multi-level feature maps as buffer metadata",
    plugin_init, VERSION, GST_LICENSE, GST_PACKAGE_NAME, GST_PACKAGE_ORIGIN)

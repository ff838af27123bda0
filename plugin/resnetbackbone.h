/* SPDX-License-Identifier: Apache-2.0 */
#ifndef __GST_RESNET_BACKBONE_H__
#define __GST_RESNET_BACKBONE_H__

#include <gst/base/gstbasetransform.h>
#include <gst/gst.h>

G_BEGIN_DECLS

#define GST_TYPE_RESNET_BACKBONE (gst_resnet_backbone_get_type ())
G_DECLARE_FINAL_TYPE (GstResnetBackbone, gst_resnet_backbone, GST, RESNET_BACKBONE, GstBaseTransform)

GST_ELEMENT_REGISTER_DECLARE (resnetbackbone);

G_END_DECLS

#endif /* __GST_RESNET_BACKBONE_H__ */

// SPDX-License-Identifier: Apache-2.0
// Umbrella header of the backbone library.
#pragma once

#include "backbone/checkpoint.h"
#include "backbone/config.h"
#include "backbone/engine.h"
#include "backbone/engine_table.h"
#include "backbone/error.h"
#include "backbone/fpn.h"
#include "backbone/frame.h"
#include "backbone/model.h"
#include "backbone/model_instance.h"
#include "backbone/npy.h"
#include "backbone/ops.h"
#include "backbone/preprocess.h"
#include "backbone/resnet.h"
#include "backbone/shape_spec.h"
#include "backbone/tensor.h"
#include "backbone/version.h"

// SPDX-License-Identifier: Apache-2.0
// libbackbone's side of the CUDA module: finds libbackbone-cuda.so ($BACKBONE_CUDA_MODULE, else
// BACKBONE_MODULE_DIR_NAME/ next to libbackbone), dlopen()s it once on first use, checks the version
// of its function table (module_api.h) and turns its status codes into DeviceError. Plain C++: no
// CUDA header, so libbackbone loads and runs where there is no CUDA at all.
#include "cuda/loader.h"

#include <dlfcn.h>

#include <cstdlib>
#include <sstream>
#include <string>

#include "backbone/error.h"
#include "build_config.h"
#include "cuda/module_api.h"

namespace backbone::detail {
namespace {

constexpr std::size_t kMessageSize = 2048;

struct CudaModule {
  std::string path;                    // the file dlopen()ed (or tried)
  const BackboneCudaApi* api = nullptr;  // set when the module loaded and its table fits
  int device_count = 0;
  std::string why;  // empty when usable
};

#if BACKBONE_HAVE_CUDA
// Any object of libbackbone: dladdr() on it names libbackbone's file.
const char kAnchor = 0;

std::string libbackbone_dir() {
  Dl_info info{};
  if (dladdr(&kAnchor, &info) == 0 || !info.dli_fname) return {};
  std::string file = info.dli_fname;
  const auto slash = file.rfind('/');
  return slash == std::string::npos ? std::string(".") : file.substr(0, slash);
}
#endif

CudaModule load_module() {
  CudaModule m;
  const char* env = std::getenv("BACKBONE_CUDA_MODULE");
  if (env && *env) {
    m.path = env;
  } else {
#if !BACKBONE_HAVE_CUDA
    m.why = "this libbackbone was built without its CUDA module (BACKBONE_WITH_CUDA=OFF or no CUDA toolkit at "
            "build time); set BACKBONE_CUDA_MODULE to the path of a " BACKBONE_CUDA_MODULE_NAME
            " built separately to use one";
    return m;
#else
    const std::string dir = libbackbone_dir();
    if (dir.empty()) {
      m.why = "cannot locate libbackbone's own file (dladdr failed), so the CUDA module " BACKBONE_CUDA_MODULE_NAME
              " cannot be found next to it; set BACKBONE_CUDA_MODULE to its path";
      return m;
    }
    m.path = dir + "/" BACKBONE_MODULE_DIR_NAME "/" BACKBONE_CUDA_MODULE_NAME;
#endif
  }
  // RTLD_LOCAL: the module's symbols (its static CUDA runtime included) stay private to it.
  void* handle = dlopen(m.path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* error = dlerror();
    m.why = "cannot load the CUDA module " + m.path + ": " + (error ? error : "unknown dlopen error");
    return m;
  }
  // Never dlclose()d: device memory and CUDA state live as long as the process.
  dlerror();
  void* symbol = dlsym(handle, BACKBONE_CUDA_ENTRY_POINT);
  if (!symbol) {
    const char* error = dlerror();
    m.why = "the file " + m.path + " is not a backbone CUDA module: it does not export " BACKBONE_CUDA_ENTRY_POINT +
            std::string(error ? std::string(" (") + error + ")" : "");
    return m;
  }
  const auto entry = reinterpret_cast<BackboneCudaEntryPoint>(symbol);
  const BackboneCudaApi* api = entry();
  if (!api || api->version != BACKBONE_CUDA_API_VERSION || api->struct_size < sizeof(BackboneCudaApi)) {
    std::ostringstream os;
    os << "the CUDA module " << m.path << " does not match this libbackbone: expected interface version "
       << BACKBONE_CUDA_API_VERSION << " (table of " << sizeof(BackboneCudaApi) << " bytes), found ";
    if (api)
      os << "version " << api->version << " (table of " << api->struct_size << " bytes)";
    else
      os << "no table";
    m.why = os.str();
    return m;
  }
  char msg[kMessageSize] = {0};
  int count = 0;
  if (api->device_count(&count, msg, sizeof(msg)) != BACKBONE_CUDA_OK) {
    m.why = "the CUDA module " + m.path + " loaded but finds no usable CUDA driver or device: " + msg;
    return m;
  }
  if (count <= 0) {
    m.why = "the CUDA module " + m.path + " loaded but the CUDA driver reports no device";
    return m;
  }
  m.api = api;
  m.device_count = count;
  return m;
}

// Loaded once, on first use; C++11 guarantees thread-safe initialisation of the static.
const CudaModule& module() {
  static const CudaModule m = load_module();
  return m;
}

// The module's table when `device` (cuda:N) can be used; otherwise throws DeviceError for `what`.
const BackboneCudaApi& require_device(int device, const char* what) {
  const CudaModule& m = module();
  if (!m.api) throw DeviceError(std::string(what) + " on cuda:" + std::to_string(device) +
                                ": CUDA is not available: " + m.why);
  if (device < 0 || device >= m.device_count)
    throw DeviceError(std::string(what) + ": cuda:" + std::to_string(device) + " does not exist: expected a device "
                      "index in [0, " + std::to_string(m.device_count) + ") (" + std::to_string(m.device_count) +
                      " CUDA device(s) found)");
  return *m.api;
}

void check_status(int status, const char* what, int device, const char* msg) {
  if (status == BACKBONE_CUDA_OK) return;
  throw DeviceError(std::string(what) + " on cuda:" + std::to_string(device) + " failed: " + msg);
}

}  // namespace

bool cuda_available(std::string* why) noexcept {
  try {
    const CudaModule& m = module();
    if (why) *why = m.why;
    return m.api != nullptr;
  } catch (...) {  // std::bad_alloc at worst
    return false;
  }
}

int cuda_device_count() noexcept {
  try {
    return module().device_count;
  } catch (...) {
    return 0;
  }
}

void* cuda_malloc(int device, std::size_t bytes) {
  const BackboneCudaApi& api = require_device(device, "cuda_malloc");
  char msg[kMessageSize] = {0};
  void* ptr = nullptr;
  const int status = api.malloc(device, bytes, &ptr, msg, sizeof(msg));
  if (status != BACKBONE_CUDA_OK)
    throw DeviceError("cuda_malloc of " + std::to_string(bytes) + " bytes on cuda:" + std::to_string(device) +
                      " failed: " + msg);
  return ptr;
}

void cuda_free(int device, void* ptr) noexcept {
  if (!ptr) return;
  try {
    const CudaModule& m = module();
    if (!m.api) return;  // nothing can have been allocated
    char msg[kMessageSize] = {0};
    // A failure here (e.g. after a sticky kernel error) cannot be reported from a noexcept
    // deleter; the memory is then gone with the context anyway.
    m.api->free(device, ptr, msg, sizeof(msg));
  } catch (...) {
  }
}

void cuda_memcpy(void* dst, const void* src, std::size_t bytes, CopyKind kind, int device) {
  const BackboneCudaApi& api = require_device(device, "cuda_memcpy");
  int module_kind = BACKBONE_CUDA_DEVICE_TO_DEVICE;
  const char* name = "cuda_memcpy device to device";
  switch (kind) {
    case CopyKind::HostToDevice:
      module_kind = BACKBONE_CUDA_HOST_TO_DEVICE;
      name = "cuda_memcpy host to device";
      break;
    case CopyKind::DeviceToHost:
      module_kind = BACKBONE_CUDA_DEVICE_TO_HOST;
      name = "cuda_memcpy device to host";
      break;
    case CopyKind::DeviceToDevice:
      break;
  }
  char msg[kMessageSize] = {0};
  check_status(api.memcpy(dst, src, bytes, module_kind, device, msg, sizeof(msg)), name, device, msg);
}

void cuda_deform_conv2d(const Tensor& input, const Tensor& offset, const Tensor& weight, const Tensor& mask,
                        const Tensor& bias, const ops::DeformConv2dParams& params, Tensor& out) {
  const int device = input.device().index;
  const BackboneCudaApi& api = require_device(device, "deform_conv2d");
  BackboneDeformConv2dArgs args{};
  args.device = device;
  args.input = input.data_ptr<float>();
  args.offset = offset.data_ptr<float>();
  args.weight = weight.data_ptr<float>();
  args.mask = mask.defined() ? mask.data_ptr<float>() : nullptr;
  args.bias = bias.defined() ? bias.data_ptr<float>() : nullptr;
  args.out = out.data_ptr<float>();
  args.n = input.size(0);
  args.channels = input.size(1);
  args.height = input.size(2);
  args.width = input.size(3);
  args.out_channels = weight.size(0);
  args.kernel_h = weight.size(2);
  args.kernel_w = weight.size(3);
  args.out_h = out.size(2);
  args.out_w = out.size(3);
  args.stride_h = params.stride_h;
  args.stride_w = params.stride_w;
  args.pad_h = params.pad_h;
  args.pad_w = params.pad_w;
  args.dilation_h = params.dilation_h;
  args.dilation_w = params.dilation_w;
  args.groups = params.groups;
  args.deformable_groups = params.deformable_groups;
  char msg[kMessageSize] = {0};
  check_status(api.deform_conv2d(&args, msg, sizeof(msg)), "deform_conv2d", device, msg);
}

CudaDeviceInfo cuda_device_info(int device) {
  const BackboneCudaApi& api = require_device(device, "cuda_device_info");
  BackboneCudaDeviceProperties p{};
  char msg[kMessageSize] = {0};
  check_status(api.device_properties(device, &p, msg, sizeof(msg)), "cuda_device_info", device, msg);
  CudaDeviceInfo info;
  info.name = p.name;
  info.major = p.major;
  info.minor = p.minor;
  info.sm_count = p.sm_count;
  info.clock_khz = p.clock_khz;
  info.memory_clock_khz = p.memory_clock_khz;
  info.memory_bus_width = p.memory_bus_width;
  info.total_memory = p.total_memory;
  info.cudnn_version = p.cudnn_version;
  info.driver_version = p.driver_version;
  info.module = api.build_info();
  return info;
}

namespace {

// An engine call's status as the library's error: out of memory named first, UNSUPPORTED as
// UnsupportedError (engine "auto" moves on), everything else DeviceError with the module's message.
void check_engine_status(int status, const std::string& what, int device, const char* msg) {
  if (status == BACKBONE_CUDA_OK) return;
  const std::string where = "engine 'cuda' " + what + " on cuda:" + std::to_string(device);
  if (status == BACKBONE_CUDA_ERROR_OUT_OF_MEMORY)
    throw DeviceError(where + " failed: out of memory on the device: " + msg);
  if (status == BACKBONE_CUDA_ERROR_UNSUPPORTED) throw UnsupportedError(where + ": " + msg);
  throw DeviceError(where + " failed: " + msg);
}

}  // namespace

std::shared_ptr<CudaEngineHandle> cuda_engine_create(const BackboneCudaNetDesc& net,
                                                     const BackboneCudaEngineOptions& options) {
  const BackboneCudaApi& api = require_device(options.device, "engine 'cuda'");
  if (!api.engine_create || !api.engine_destroy || !api.engine_forward || !api.engine_release_output ||
      !api.engine_describe || !api.engine_forward_frame)
    throw DeviceError("engine 'cuda' on cuda:" + std::to_string(options.device) + ": the CUDA module " +
                      module().path + " has no engine (its engine_* entries are empty)");
  char msg[kMessageSize] = {0};
  BackboneCudaEngine* engine = nullptr;
  check_engine_status(api.engine_create(&net, &options, &engine, msg, sizeof(msg)), "create", options.device, msg);
  return std::make_shared<CudaEngineHandle>(&api, engine, options.device);
}

CudaEngineHandle::~CudaEngineHandle() {
  if (engine_) api_->engine_destroy(engine_);
}

std::string CudaEngineHandle::describe() const {
  const char* d = api_->engine_describe(engine_);
  return d ? std::string(d) : std::string("cuda on cuda:") + std::to_string(device_);
}

void CudaEngineHandle::forward(const float* images, bool on_device, int64_t n, int64_t h, int64_t w,
                               std::vector<BackboneCudaOutput>& outputs) {
  char msg[kMessageSize] = {0};
  check_engine_status(api_->engine_forward(engine_, images, on_device ? 1 : 0, n, h, w, outputs.data(),
                                           static_cast<int32_t>(outputs.size()), msg, sizeof(msg)),
                      "forward", device_, msg);
}

void CudaEngineHandle::forward_frame(const BackboneCudaFrameArgs& frame, std::vector<BackboneCudaOutput>& outputs) {
  char msg[kMessageSize] = {0};
  check_engine_status(api_->engine_forward_frame(engine_, &frame, outputs.data(), static_cast<int32_t>(outputs.size()),
                                                 msg, sizeof(msg)),
                      "forward_frame", device_, msg);
}

void CudaEngineHandle::release_output(uint64_t token) noexcept { api_->engine_release_output(engine_, token); }

void cuda_event_synchronize(int device, void* event) {
  if (!event) return;
  const BackboneCudaApi& api = require_device(device, "cuda_event_synchronize");
  char msg[kMessageSize] = {0};
  check_status(api.event_synchronize(device, event, msg, sizeof(msg)), "cudaEventSynchronize", device, msg);
}

}  // namespace backbone::detail

// ProcessGroupNCCL behind native/distributed/nccl.h: a CUDA build with NCCL's headers creates it; any other build
// says it has none. The options are torch.distributed's defaults but for the timeout, which is the
// group's (MIXLORA_DIST_TIMEOUT): collectives are awaited with it (Work::wait) and NCCL's watchdog
// uses it too.
#include "nccl.h"

#include "common.h"

#if MIXLORA_TORCH_NCCL
#define USE_C10D_NCCL 1
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#include <torch/version.h>
#endif

namespace mx {

#if MIXLORA_TORCH_NCCL
// The ProcessGroupNCCL methods used here by the libtorch versions that have them.
#define MX_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

struct NcclGroup {
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> pg;
};

bool NcclBuilt() { return true; }

std::string NcclVersion() {
  // (major << 32) | (minor << 16) | patch, as torch.cuda.nccl.version() decodes it
  std::uint64_t v = torch::cuda::nccl::version();
  return std::to_string(v >> 32) + "." + std::to_string((v >> 16) & 0xffff) + "." + std::to_string(v & 0xffff);
}

std::shared_ptr<NcclGroup> NcclCreate(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                      std::chrono::milliseconds timeout, int device) {
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
  auto opts = c10d::ProcessGroupNCCL::Options::create();
  opts->timeout = timeout;
  auto g = std::make_shared<NcclGroup>();
  g->pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(c10::make_intrusive<c10d::PrefixStore>("nccl", store), rank,
                                                      size, opts);
#if MX_TORCH_AT_LEAST(2, 5)
  // The communicator now (torch.distributed's device_id), so that a rank that cannot reach the others
  // fails at joining rather than at its first optimizer step.
  g->pg->eagerConnectSingleDevice(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device)));
#endif
  return g;
}

c10::intrusive_ptr<c10d::Work> NcclAllReduce(NcclGroup& g, std::vector<at::Tensor>& tensors) {
  return g.pg->allreduce(tensors);
}

void NcclShutdown(NcclGroup& g) {
#if MX_TORCH_AT_LEAST(2, 3)
  g.pg->shutdown();
#else
  (void)g;
#endif
}

#else  // no NCCL in this build

struct NcclGroup {};

bool NcclBuilt() { return false; }
std::string NcclVersion() { return ""; }

std::shared_ptr<NcclGroup> NcclCreate(const c10::intrusive_ptr<c10d::Store>&, int, int, std::chrono::milliseconds,
                                      int) {
  throw ArgError("this addon was built without NCCL (a CPU build, or CUDA's or NCCL's headers were not found)");
}

c10::intrusive_ptr<c10d::Work> NcclAllReduce(NcclGroup&, std::vector<at::Tensor>&) {
  throw ArgError("this addon was built without NCCL");
}

void NcclShutdown(NcclGroup&) {}

#endif

}  // namespace mx

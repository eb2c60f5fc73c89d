// c10d's ProcessGroupNCCL for the CUDA tensors of a data-parallel group (native/distributed/distributed.cc), as
// torch.distributed builds it for backend "cpu:gloo,cuda:nccl". Compiled in CUDA builds whose CUDA and
// NCCL headers were found (MIXLORA_TORCH_NCCL=1, see scripts/libtorch.mjs); elsewhere NcclBuilt() is
// false and the other functions throw. Only nccl.cc sees CUDA's headers.
#pragma once
#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace mx {

struct NcclGroup;

bool NcclBuilt();
// The NCCL version libtorch was built with ("2.27.3"), or "" without NCCL.
std::string NcclVersion();
// A group on cuda:`device` (made the current device) over `store`, under the prefix "nccl" (the Gloo
// group uses the store too); collectives fail after `timeout`.
std::shared_ptr<NcclGroup> NcclCreate(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                      std::chrono::milliseconds timeout, int device);
// Sums `tensors` (CUDA, on the group's device) across ranks, in place.
c10::intrusive_ptr<c10d::Work> NcclAllReduce(NcclGroup& g, std::vector<at::Tensor>& tensors);
// Ends a healthy group (after a barrier): its communicators are finalised, not aborted.
void NcclShutdown(NcclGroup& g);

}  // namespace mx

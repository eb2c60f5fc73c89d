// Data parallelism over PyTorch's own distributed runtime (c10d): a TCPStore for the rendezvous and a
// ProcessGroupGloo for the collectives, as torch.distributed.init_process_group("gloo") builds them
// (https://pytorch.org/docs/stable/distributed.html). One group per process, held until distDestroy.
// A CUDA build with NCCL adds, when asked (a rank training on CUDA), a ProcessGroupNCCL over the same
// store (native/distributed/nccl.h) for CUDA tensors, as backend "cpu:gloo,cuda:nccl" does: the gradients are then
// summed on the device; CPU tensors (step statistics, gathers, the monitored barrier) stay on Gloo.
//
// Collectives are synchronous from JavaScript: each waits on its Work with the group's timeout, so a
// dead or silent peer is an error naming the ranks involved, never a hang. Without NCCL, CUDA tensors
// are staged through host memory for Gloo.
#include "common.h"
#include "nccl.h"

#include <torch/version.h>
// The gloo headers are declarations only (native/third_party/gloo, see its README); the code is libtorch's.
#define USE_C10D_GLOO 1
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <string>

namespace {
using namespace mx;
using Ms = std::chrono::milliseconds;

struct Group {
  int rank = 0;
  int size = 1;
  Ms timeout{0};
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
  // CUDA tensors' collectives, on cuda:device (null: everything goes through Gloo)
  std::shared_ptr<NcclGroup> nccl;
  int device = -1;
};
// Never deleted while the process lives: destroying a group whose peer died can block in gloo's
// worker threads, and a failing process must still exit (distDestroy ends a healthy group).
Group* group = nullptr;

Group& Current(const char* op) {
  if (!group) throw ArgError(std::string(op) + ": no process group (distInit was not called)");
  return *group;
}

std::string RankName(int r) { return "rank " + std::to_string(r); }

// After a failed collective: which peers are gone. Gloo's own error names a socket, not a rank;
// monitoredBarrier (the tool torch.distributed.monitored_barrier exposes) names the ranks that did not
// answer. With two ranks the lost one is the other, whatever the barrier says. When every rank
// answers, none is lost (e.g. NCCL refused the collective itself).
std::string LostRanks(Group& g) {
  std::string named;
  try {
    c10d::BarrierOptions o;
    o.timeout = std::min(g.timeout, Ms(10000));
    g.pg->monitoredBarrier(o, true);
  } catch (const std::exception& e) {
    named = e.what();
    auto nl = named.find('\n');
    if (nl != std::string::npos) named.resize(nl);
  }
  if (named.empty()) return "every rank answered a monitored barrier";
  if (g.size == 2) return RankName(1 - g.rank) + " is lost (" + named + ")";
  return named;
}

// Starts a collective and waits for it; any failure (in starting it too: NCCL creates its communicator
// then) becomes one message naming this rank and the lost ones.
void Await(Group& g, const std::function<c10::intrusive_ptr<c10d::Work>()>& start, const std::string& op) {
  std::string why;
  try {
    if (start()->wait(g.timeout)) return;
    why = "timed out after " + std::to_string(g.timeout.count() / 1000) + " s";
  } catch (const std::exception& e) {
    why = e.what();
    auto nl = why.find('\n');
    if (nl != std::string::npos) why.resize(nl);
  }
  throw std::runtime_error(RankName(g.rank) + ": " + op + " failed: " + LostRanks(g) + "; " + why);
}

// distInit({rank, worldSize, masterAddr, masterPort, timeoutMs, ncclDevice?}): rank 0 serves the store;
// with ncclDevice (a CUDA index) the group also gets NCCL on that device.
MX_FN(distInit) {
  if (group) throw ArgError("distInit: this process already joined a group");
  auto o = info[0].As<Napi::Object>();
  int rank = static_cast<int>(Int(o.Get("rank")));
  int size = static_cast<int>(Int(o.Get("worldSize")));
  std::string addr = o.Get("masterAddr").As<Napi::String>().Utf8Value();
  int64_t port = Int(o.Get("masterPort"));
  Ms timeout(Int(o.Get("timeoutMs")));
  if (size < 1 || rank < 0 || rank >= size) throw ArgError("distInit: rank must be in [0, worldSize)");
  if (port < 1 || port > 65535) throw ArgError("distInit: masterPort must be in 1..65535");
  bool nccl = o.Has("ncclDevice") && !o.Get("ncclDevice").IsUndefined();
  int device = nccl ? static_cast<int>(Int(o.Get("ncclDevice"))) : -1;
  if (nccl && device < 0) throw ArgError("distInit: ncclDevice must be a CUDA device index (0, 1, ...)");
  if (device >= 0 && !NcclBuilt()) throw ArgError("distInit: NCCL asked for, but this addon was built without it");

  auto g = std::make_unique<Group>();
  g->rank = rank;
  g->size = size;
  g->timeout = timeout;
  c10d::TCPStoreOptions so;
  so.port = static_cast<std::uint16_t>(port);
  so.isServer = rank == 0;
  so.numWorkers = static_cast<std::size_t>(size);
  so.waitWorkers = true;
  so.timeout = timeout;
  try {
    g->store = c10::make_intrusive<c10d::TCPStore>(addr, so);
  } catch (const std::exception& e) {
    std::string why = e.what();
    auto nl = why.find('\n');
    if (nl != std::string::npos) why.resize(nl);
    std::string where = addr + ":" + std::to_string(port);
    throw std::runtime_error(
        rank == 0 ? RankName(rank) + ": cannot serve the rendezvous at " + where + " (" + why + ")"
                  : RankName(rank) + ": cannot join the rendezvous at " + where + " within " +
                        std::to_string(timeout.count() / 1000) + " s (" + why + ")");
  }
  auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
  // Like torch.distributed: GLOO_SOCKET_IFNAME picks the interface, else the host name's address.
  const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
  opts->devices.push_back(ifname && *ifname ? c10d::ProcessGroupGloo::createDeviceForInterface(ifname)
                                            : c10d::ProcessGroupGloo::createDefaultDevice());
  opts->threads = 2;
  try {
    g->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(g->store, rank, size, opts);
  } catch (const std::exception& e) {
    std::string why = e.what();
    auto nl = why.find('\n');
    if (nl != std::string::npos) why.resize(nl);
    throw std::runtime_error(RankName(rank) + ": cannot connect to the other ranks (" + why + ")");
  }
  if (device >= 0) {
    try {
      g->nccl = NcclCreate(g->store, rank, size, timeout, device);
      g->device = device;
    } catch (const std::exception& e) {
      std::string why = e.what();
      auto nl = why.find('\n');
      if (nl != std::string::npos) why.resize(nl);
      throw std::runtime_error(RankName(rank) + ": cannot create the NCCL group on cuda:" + std::to_string(device) +
                               " (" + why + ")");
    }
  }
  group = g.release();
  return info.Env().Undefined();
}

// The most bytes copied into one all-reduce buffer (PyTorch DDP's buckets are 25 MiB): summing a large
// adapter's gradients through one flat copy held all of them twice at once.
constexpr int64_t kBucketBytes = int64_t{32} << 20;

// distAllReduceSum(tensors[]): sums each tensor across ranks, in place, in the first tensor's dtype: the
// tensors are copied into flat buckets of at most kBucketBytes (a collective per bucket, not per tensor: DDP's
// bucket idea), and a tensor as large as a bucket that is contiguous, of that dtype and where the sum runs
// is summed where it lies. With NCCL and CUDA tensors the buckets stay on the device; otherwise they are on the
// CPU, for Gloo.
MX_FN(distAllReduceSum) {
  Group& g = Current("distAllReduceSum");
  auto ts = GetList(info[0]);
  if (ts.empty()) return info.Env().Undefined();
  at::NoGradGuard no_grad;
  bool onNccl = g.nccl && ts[0].is_cuda();
  at::Device where = onNccl ? ts[0].device() : at::Device(at::kCPU);
  if (onNccl && where.index() != g.device)
    throw ArgError("distAllReduceSum: tensors on " + where.str() + " but this rank's NCCL group is on cuda:" +
                   std::to_string(g.device));
  const at::ScalarType type = ts[0].scalar_type();
  const int64_t itemBytes = static_cast<int64_t>(c10::elementSize(type));
  auto sum = [&](std::vector<at::Tensor>& buf) {
    if (onNccl)
      Await(g, [&] { return NcclAllReduce(*g.nccl, buf); }, "all-reduce (NCCL, " + where.str() + ")");
    else
      Await(g, [&] { return g.pg->allreduce(buf); }, "all-reduce");
  };
  size_t first = 0;
  while (first < ts.size()) {
    const at::Tensor& t = ts[first];
    if (t.numel() * itemBytes >= kBucketBytes && t.is_contiguous() && t.scalar_type() == type && t.device() == where) {
      std::vector<at::Tensor> buf{t.detach().reshape({-1})};  // a view: summed in place
      sum(buf);
      first++;
      continue;
    }
    size_t end = first;
    int64_t bytes = 0;
    std::vector<at::Tensor> flat;
    while (end < ts.size() && (end == first || bytes + ts[end].numel() * itemBytes <= kBucketBytes)) {
      bytes += ts[end].numel() * itemBytes;
      flat.push_back(ts[end].detach().reshape({-1}).to(where, type));
      end++;
    }
    std::vector<at::Tensor> buf{at::cat(flat)};  // [Σ numel of the bucket]
    flat.clear();
    sum(buf);
    int64_t offset = 0;
    for (size_t i = first; i < end; i++) {
      ts[i].detach().copy_(buf[0].narrow(0, offset, ts[i].numel()).view(ts[i].sizes()));
      offset += ts[i].numel();
    }
    first = end;
  }
  return info.Env().Undefined();
}

// An all-gather on its way: the tensor's bytes travel as uint8 (the bytes are all there is; Gloo has no
// int8, and 1.13's no bfloat16), the ranks' outputs are consecutive slices of one buffer. It is made of
// point-to-point messages straight into that buffer: Gloo's own all-gather gathers into a flat tensor of its
// own and copies it out, so a gathered unit would be held twice while it arrives.
struct Gathering {
  std::vector<c10::intrusive_ptr<c10d::Work>> works;  // a send and a receive per peer (none: not started)
  std::vector<at::Tensor> in;                         // [n = numel · item size] uint8, kept while it is sent
  at::Tensor all;                                     // [W · n] uint8
  at::ScalarType type;
  std::vector<int64_t> shape;  // [W, ...the tensor's shape]
  bool started = false;
};

// Both ranks of a pair number their gathers alike (every rank gathers every unit in the same order), so a
// gather's messages carry its number as their tag and two gathers in flight never take each other's.
int gatherTag = 0;

// Gloo moves the messages on its own threads; every rank sends its slice to each peer and receives theirs.
Gathering StartGather(Group& g, const at::Tensor& tensor) {
  at::Tensor t = tensor.detach().to(at::kCPU).contiguous();
  Gathering s;
  at::Tensor mine = t.reshape({-1}).view(at::kByte);  // [n]
  const int64_t n = mine.numel();
  s.all = at::empty({g.size * n}, mine.options());
  s.all.narrow(0, g.rank * n, n).copy_(mine);
  s.in.push_back(mine);
  s.type = t.scalar_type();
  s.shape.push_back(g.size);
  for (int64_t d : t.sizes()) s.shape.push_back(d);
  const int tag = gatherTag;
  gatherTag = (gatherTag + 1) % (1 << 30);
  try {
    for (int peer = 0; peer < g.size; peer++) {
      if (peer == g.rank) continue;
      std::vector<at::Tensor> theirs{s.all.narrow(0, peer * n, n)};
      s.works.push_back(g.pg->recv(theirs, peer, tag));
      s.works.push_back(g.pg->send(s.in, peer, tag));
    }
    s.started = true;
  } catch (const std::exception&) {
    // Await below names the lost ranks
  }
  return s;
}

at::Tensor FinishGather(Group& g, Gathering& s) {
  if (!s.started) {
    auto failed = []() -> c10::intrusive_ptr<c10d::Work> { throw std::runtime_error("the all-gather could not start"); };
    Await(g, failed, "all-gather");
  }
  for (auto& work : s.works) Await(g, [&] { return work; }, "all-gather");
  return s.all.view(s.type).view(s.shape);
}

// Gathers started and not yet finished, by handle.
std::map<int64_t, Gathering> gatherings;
int64_t nextGathering = 1;

// distAllGather(tensor) -> [worldSize, ...shape]: every rank's tensor, in rank order.
MX_FN(distAllGather) {
  Group& g = Current("distAllGather");
  Gathering s = StartGather(g, Get(info[0]));
  return Put(info.Env(), FinishGather(g, s));
}

// distAllGatherStart(tensor) -> handle: starts the all-gather and returns at once (the tensor may be freed);
// distAllGatherFinish(handle) -> [worldSize, ...shape] waits for it. Every started gather must be finished.
MX_FN(distAllGatherStart) {
  Group& g = Current("distAllGatherStart");
  int64_t id = nextGathering++;
  gatherings.emplace(id, StartGather(g, Get(info[0])));
  return Napi::Number::New(info.Env(), static_cast<double>(id));
}

MX_FN(distAllGatherFinish) {
  Group& g = Current("distAllGatherFinish");
  auto found = gatherings.find(Int(info[0]));
  if (found == gatherings.end()) throw ArgError("distAllGatherFinish: no such gather (finished already?)");
  Gathering s = std::move(found->second);
  gatherings.erase(found);
  return Put(info.Env(), FinishGather(g, s));
}

MX_FN(distBarrier) {
  Group& g = Current("distBarrier");
  c10d::BarrierOptions o;
  o.timeout = g.timeout;
  Await(g, [&] { return g.pg->barrier(o); }, "barrier");
  return info.Env().Undefined();
}

// distBackend() -> "nccl" (CUDA tensors' collectives on NCCL, the rest on Gloo) or "gloo".
MX_FN(distBackend) { return Napi::String::New(info.Env(), Current("distBackend").nccl ? "nccl" : "gloo"); }

// ncclInfo() -> {built, version}: whether this addon has ProcessGroupNCCL, and NCCL's version.
MX_FN(ncclInfo) {
  auto o = Napi::Object::New(info.Env());
  o.Set("built", Napi::Boolean::New(info.Env(), NcclBuilt()));
  o.Set("version", NcclVersion());
  return o;
}

// distDestroy(): leaves the group; called after a barrier (leaveGroup), so that rank 0's store outlives
// every peer's last use of it.
MX_FN(distDestroy) {
  if (!group) return info.Env().Undefined();
  Group* g = group;
  group = nullptr;
  if (g->nccl) NcclShutdown(*g->nccl);
  delete g;
  return info.Env().Undefined();
}

}  // namespace

namespace mx {
void RegisterDistributed(Napi::Env env, Napi::Object exports) {
  MX_EXPORT(exports, distInit);
  MX_EXPORT(exports, distAllReduceSum);
  MX_EXPORT(exports, distAllGather);
  MX_EXPORT(exports, distAllGatherStart);
  MX_EXPORT(exports, distAllGatherFinish);
  MX_EXPORT(exports, distBarrier);
  MX_EXPORT(exports, distBackend);
  MX_EXPORT(exports, ncclInfo);
  MX_EXPORT(exports, distDestroy);
}
}  // namespace mx

// Process-wide settings and facts: threads, random generators, CUDA, the tensor table.
#include "common.h"

#include <ATen/detail/CUDAHooksInterface.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <torch/cuda.h>
#include <torch/version.h>

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 9)
#include <c10/core/CachingDeviceAllocator.h>
#define MIXLORA_DEVICE_ALLOCATOR_STATS 1
#else
#define MIXLORA_DEVICE_ALLOCATOR_STATS 0
#endif

// libtorch's CPU facts from cpuinfo (at::cpu::get_cpu_capabilities, PyTorch 2.11+); older builds ask cpuid.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 11)
#include <ATen/cpu/Utils.h>
#define MIXLORA_TORCH_CPU_CAPABILITIES 1
#else
#define MIXLORA_TORCH_CPU_CAPABILITIES 0
#endif
#include <ATen/core/dispatch/Dispatcher.h>

#include <dlfcn.h>
#include <link.h>

#include <mutex>

namespace {
using namespace mx;

MX_FN(setNumThreads) {
  int64_t n = Int(info[0]);
  if (n < 1) throw ArgError("setNumThreads: need at least 1 thread");
  at::set_num_threads(static_cast<int>(n));
  return info.Env().Undefined();
}
MX_FN(getNumThreads) { return Napi::Number::New(info.Env(), at::get_num_threads()); }

const at::Generator& GeneratorFor(const at::Device& dev) {
  if (dev.is_cpu()) return at::detail::getDefaultCPUGenerator();
  // Context::defaultGenerator is the same call on libtorch 1.13 and 2.x (the CUDA hooks renamed theirs).
  if (dev.is_cuda()) return at::globalContext().defaultGenerator(at::Device(at::kCUDA, dev.has_index() ? dev.index() : 0));
  throw ArgError("no random generator for device " + dev.str());
}

// manualSeed(seed): every generator (CPU and each CUDA device), like torch.manual_seed.
MX_FN(manualSeed) {
  uint64_t seed = static_cast<uint64_t>(Int(info[0]));
  {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_current_seed(seed);
  }
  if (torch::cuda::is_available()) torch::cuda::manual_seed_all(seed);
  return info.Env().Undefined();
}
// getRngState(device) -> uint8 tensor; setRngState(device, tensor). Checkpoints keep these.
MX_FN(getRngState) {
  auto gen = GeneratorFor(Device(info[0]));
  std::lock_guard<std::mutex> lock(gen.mutex());
  return Put(info.Env(), gen.get_state());
}
MX_FN(setRngState) {
  auto gen = GeneratorFor(Device(info[0]));
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(Get(info[1]));
  return info.Env().Undefined();
}

MX_FN(cudaIsAvailable) { return Napi::Boolean::New(info.Env(), torch::cuda::is_available()); }
MX_FN(cudaDeviceCount) { return Napi::Number::New(info.Env(), static_cast<double>(torch::cuda::device_count())); }
MX_FN(cudaSynchronize) {
  if (torch::cuda::is_available()) torch::cuda::synchronize(info[0].IsNumber() ? Int(info[0]) : -1);
  return info.Env().Undefined();
}

// cudaMemoryStats(device) -> {allocated, reserved, peakAllocated, peakReserved} in bytes: the CUDA caching
// allocator's own counters (torch.cuda.memory_allocated / memory_reserved / max_memory_*), via the
// device-generic allocator interface of PyTorch 2.9+ (no CUDA headers needed). cudaResetPeakStats(device).
MX_FN(cudaMemoryStats) {
#if MIXLORA_DEVICE_ALLOCATOR_STATS
  if (!torch::cuda::is_available()) throw ArgError("cudaMemoryStats: no CUDA device");
  auto index = static_cast<c10::DeviceIndex>(Int(info[0]));
  auto stats = c10::getDeviceAllocator(c10::DeviceType::CUDA)->getDeviceStats(index);
  const auto all = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
  auto o = Napi::Object::New(info.Env());
  o.Set("allocated", static_cast<double>(stats.allocated_bytes[all].current));
  o.Set("reserved", static_cast<double>(stats.reserved_bytes[all].current));
  o.Set("peakAllocated", static_cast<double>(stats.allocated_bytes[all].peak));
  o.Set("peakReserved", static_cast<double>(stats.reserved_bytes[all].peak));
  return o;
#else
  throw ArgError("cudaMemoryStats: needs libtorch 2.9 or later");
#endif
}
MX_FN(cudaResetPeakStats) {
#if MIXLORA_DEVICE_ALLOCATOR_STATS
  if (!torch::cuda::is_available()) throw ArgError("cudaResetPeakStats: no CUDA device");
  c10::getDeviceAllocator(c10::DeviceType::CUDA)->resetPeakStats(static_cast<c10::DeviceIndex>(Int(info[0])));
  return info.Env().Undefined();
#else
  throw ArgError("cudaResetPeakStats: needs libtorch 2.9 or later");
#endif
}

// cpuBf16() -> {flagsFrom, architecture, avx512Bf16, amxBf16, onednnBf16}: whether this CPU does bfloat16
// arithmetic, as libtorch sees it (src/tensor/compute-mode.ts decides from this how a bfloat16 model computes).
// The flags: libtorch's cpuinfo where this libtorch exposes it ("libtorch"), else the compiler's cpuid
// builtins ("cpuid"). onednnBf16: oneDNN's own answer, the operator mkldnn::_is_mkldnn_bf16_supported
// (torch.ops.mkldnn._is_mkldnn_bf16_supported(): the effective oneDNN ISA, which ONEDNN_MAX_CPU_ISA caps,
// is AVX-512 or has bfloat16 conversions), null where this libtorch has no such operator.
MX_FN(cpuBf16) {
  auto env = info.Env();
  auto o = Napi::Object::New(env);
#if MIXLORA_TORCH_CPU_CAPABILITIES
  const auto caps = at::cpu::get_cpu_capabilities();
  const auto flag = [&](const char* key) {
    const auto it = caps.find(key);
    return it != caps.end() && it->second.isBool() && it->second.toBool();
  };
  const auto arch = caps.find("architecture");
  o.Set("flagsFrom", "libtorch");
  o.Set("architecture", arch != caps.end() && arch->second.isString() ? arch->second.toStringRef() : "unknown");
  o.Set("avx512Bf16", flag("avx512_bf16"));
  o.Set("amxBf16", flag("amx_bf16"));
#else
  o.Set("flagsFrom", "cpuid");
#if defined(__x86_64__)
  __builtin_cpu_init();
  o.Set("architecture", "x86_64");
  o.Set("avx512Bf16", Napi::Boolean::New(env, __builtin_cpu_supports("avx512bf16")));
  o.Set("amxBf16", Napi::Boolean::New(env, __builtin_cpu_supports("amx-bf16")));
#else
  o.Set("architecture", "unknown");
  o.Set("avx512Bf16", false);
  o.Set("amxBf16", false);
#endif
#endif
  const auto op = c10::Dispatcher::singleton().findSchema({"mkldnn::_is_mkldnn_bf16_supported", ""});
  if (op) {
    torch::jit::Stack stack;
    op->callBoxed(&stack);
    o.Set("onednnBf16", Napi::Boolean::New(env, !stack.empty() && stack.back().toBool()));
  } else {
    o.Set("onednnBf16", env.Null());
  }
  return o;
}

MX_FN(free) { return Napi::Boolean::New(info.Env(), Free(info.Env(), Int(info[0]))); }
MX_FN(freeMany) {
  auto arr = info[0].As<Napi::Array>();
  for (uint32_t i = 0; i < arr.Length(); i++) Free(info.Env(), Int(arr.Get(i)));
  return info.Env().Undefined();
}
MX_FN(liveCount) { return Napi::Number::New(info.Env(), static_cast<double>(LiveCount())); }
MX_FN(externalBytes) { return Napi::Number::New(info.Env(), static_cast<double>(ExternalBytes())); }

MX_FN(buildInfo) {
  auto o = Napi::Object::New(info.Env());
  o.Set("torchVersion", TORCH_VERSION);
  o.Set("cudaBuild", Napi::Boolean::New(info.Env(), MIXLORA_TORCH_CUDA != 0));
  o.Set("cxx11Abi", Napi::Boolean::New(info.Env(), _GLIBCXX_USE_CXX11_ABI != 0));
  o.Set("parallelInfo", at::get_parallel_info());
  // Build settings and the kernels' CPU capability as libtorch reports them (torch.__config__.show()).
  o.Set("config", at::show_config());
  return o;
}

// blasInfo() -> {openblasCore, openblasConfig, linear, hostAllocator}: what OpenBLAS says of itself when
// libtorch is linked with it (Debian's libtorch is; PyTorch's x86 wheels use MKL and both are null). Found
// among the loaded libraries at run time (Node loads the addon RTLD_LOCAL, so RTLD_DEFAULT would not see
// it), so that the addon neither links OpenBLAS nor needs its headers.
using NameFn = const char* (*)();
struct BlasLookup {
  NameFn core = nullptr;
  NameFn config = nullptr;
};
int FindOpenblas(struct dl_phdr_info* lib, size_t, void* data) {
  auto* found = static_cast<BlasLookup*>(data);
  if (!lib->dlpi_name || !*lib->dlpi_name) return 0;
  void* handle = dlopen(lib->dlpi_name, RTLD_LAZY | RTLD_NOLOAD);
  if (!handle) return 0;
  found->core = reinterpret_cast<NameFn>(dlsym(handle, "openblas_get_corename"));
  found->config = reinterpret_cast<NameFn>(dlsym(handle, "openblas_get_config"));
  dlclose(handle);  // NOLOAD took a reference; the library stays loaded by its real users
  return found->core ? 1 : 0;
}
MX_FN(blasInfo) {
  auto env = info.Env();
  BlasLookup found;
  dl_iterate_phdr(FindOpenblas, &found);
  auto o = Napi::Object::New(env);
  o.Set("openblasCore", found.core ? Napi::Value(Napi::String::New(env, found.core())) : env.Null());
  o.Set("openblasConfig", found.config ? Napi::Value(Napi::String::New(env, found.config())) : env.Null());
  o.Set("linear", Napi::String::New(env, LinearBackend()));
  o.Set("smallGemm", Napi::String::New(env, SmallLinearIsa()));
  o.Set("hostAllocator", Napi::String::New(env, HostAllocatorSetting()));
  return o;
}

}  // namespace

namespace mx {
void RegisterRuntime(Napi::Env env, Napi::Object exports) {
  MX_EXPORT(exports, setNumThreads);
  MX_EXPORT(exports, getNumThreads);
  MX_EXPORT(exports, manualSeed);
  MX_EXPORT(exports, getRngState);
  MX_EXPORT(exports, setRngState);
  MX_EXPORT(exports, cudaIsAvailable);
  MX_EXPORT(exports, cudaDeviceCount);
  MX_EXPORT(exports, cudaSynchronize);
  MX_EXPORT(exports, free);
  MX_EXPORT(exports, freeMany);
  MX_EXPORT(exports, liveCount);
  MX_EXPORT(exports, externalBytes);
  MX_EXPORT(exports, buildInfo);
  MX_EXPORT(exports, blasInfo);
  MX_EXPORT(exports, cpuBf16);
  MX_EXPORT(exports, cudaMemoryStats);
  MX_EXPORT(exports, cudaResetPeakStats);
}
}  // namespace mx

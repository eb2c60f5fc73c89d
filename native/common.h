// Shared pieces of the addon: the tensor table, argument decoding and the exception guard.
// JavaScript holds tensors as numeric ids into a table kept here; freeing is explicit (scopes on the
// JS side), with a FinalizationRegistry there as a safety net. See native/README.md.
#pragma once
#include <napi.h>
#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <vector>

namespace mx {

// ---- tensor table --------------------------------------------------------------------------
// Stores `t` and returns its id as a JS number.
Napi::Value Put(Napi::Env env, at::Tensor t);
// The tensor for an id argument; throws a JS-visible error when it was disposed or never existed.
at::Tensor& Get(const Napi::Value& v);
// An optional tensor argument: undefined or null mean none.
std::optional<at::Tensor> GetOptional(const Napi::Value& v);
std::vector<at::Tensor> GetList(const Napi::Value& v);
Napi::Value PutList(Napi::Env env, const std::vector<at::Tensor>& ts);
bool Free(Napi::Env env, int64_t id);
size_t LiveCount();
int64_t ExternalBytes();

// ---- argument decoding -----------------------------------------------------------------------
std::vector<int64_t> IntList(const Napi::Value& v);
int64_t Int(const Napi::Value& v);
double Num(const Napi::Value& v);
bool Bool(const Napi::Value& v);
at::ScalarType DType(const Napi::Value& v);   // our dtype code -> ATen
int DTypeCode(at::ScalarType t);                // ATen -> our dtype code
at::Device Device(const Napi::Value& v);       // "cpu", "cuda", "cuda:1"
at::TensorOptions Options(const Napi::Value& dtype, const Napi::Value& device);
// Optional dims: undefined/null -> all dims.
std::optional<std::vector<int64_t>> OptDims(const Napi::Value& v);

// A usage error found by the addon itself (bad argument); becomes a JS TypeError/Error.
struct ArgError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// ---- code tables ----------------------------------------------------------------------------
// A family of ops (or a setting such as a loss reduction) is a table of {name, ...} entries; JS gets
// the names in order (Names) and passes an entry's index (Op), so both sides bind by name.
template <typename T, size_t N>
Napi::Value Names(Napi::Env env, const T (&table)[N]) {
  auto arr = Napi::Array::New(env, N);
  for (size_t i = 0; i < N; i++) arr.Set(static_cast<uint32_t>(i), Napi::String::New(env, table[i].name));
  return arr;
}

template <typename T, size_t N>
const T& Op(const T (&table)[N], const Napi::Value& code) {
  int64_t c = Int(code);
  if (c < 0 || c >= static_cast<int64_t>(N)) throw ArgError("unknown op code");
  return table[c];
}

// Called inside a catch block: rethrows the current exception as a JS error (see Guard).
[[noreturn]] void Rethrow(Napi::Env env);

// Runs `body` and turns every C++ exception (libtorch's c10::Error included) into a JS Error
// carrying its message, so nothing thrown in libtorch can take the process down.
template <typename F>
Napi::Value Guard(const Napi::CallbackInfo& info, F&& body) {
  try {
    return body();
  } catch (...) {
    Rethrow(info.Env());
    return info.Env().Undefined();
  }
}

// x Wᵀ + b: oneDNN for frozen float32 weights on the CPU, else at::linear (linear.cc).
// small = false: never small_gemm.cc's kernel (a product that autograd will differentiate although grad
// mode is off where it runs: inside another autograd function's forward).
at::Tensor Linear(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b, bool small = true);
// "onednn" or "aten": what Linear uses for float32 weights in this process (products of a few rows outside
// autograd excepted, see SmallLinearIsa).
const char* LinearBackend();
// small_gemm.cc: x Wᵀ + b for at most 16 rows of float32 on a CPU with AVX2 or AVX-512, outside autograd;
// "avx512", "avx2" or "off" (no such CPU, or MIXLORA_GEMM=onednn or aten).
const char* SmallLinearIsa();
bool SmallLinearApplies(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b);
at::Tensor SmallLinear(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b);
// The same kernel on raw float32 rows, on the calling thread: y[m·ldy + o] = x[m, :] · w[o, :] (+ b[o]) for
// m < rows (1-16) and o in [o0, o1); x [rows, in] and w [.., in] contiguous. Only where SmallLinearIsa()
// is not "off".
void SmallDotRange(const float* x, int64_t rows, const float* w, const float* b, float* y, int64_t in, int64_t ldy,
                   int64_t o0, int64_t o1);
// decode_attention.cc: attention of one query per row and head (a decode step), float32 on the CPU outside
// autograd, without dropout or is_causal, where the small-row kernel is on; each (row, head) alone.
bool DecodeAttentionApplies(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const std::optional<at::Tensor>& mask, double dropout, bool causal);
at::Tensor DecodeAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const std::optional<at::Tensor>& mask);
// The same over paged KV blocks, read in place (decode_attention.cc has the layout).
at::Tensor PagedDecodeAttention(const at::Tensor& q, const at::Tensor& kPool, const at::Tensor& vPool,
                                const at::Tensor& tables, const at::Tensor& lens, int64_t window, double scale);
// glibc's malloc told to keep freed memory for reuse (host_allocator.cc); once, when the addon loads.
void ConfigureHostAllocator();
// "reuse" when ConfigureHostAllocator changed glibc's settings, else "default".
const char* HostAllocatorSetting();

using Registrar = void (*)(Napi::Env, Napi::Object);
void RegisterCreate(Napi::Env env, Napi::Object exports);
void RegisterProfile(Napi::Env env, Napi::Object exports);
void RegisterShape(Napi::Env env, Napi::Object exports);
void RegisterMath(Napi::Env env, Napi::Object exports);
void RegisterNN(Napi::Env env, Napi::Object exports);
void RegisterAutograd(Napi::Env env, Napi::Object exports);
void RegisterFused(Napi::Env env, Napi::Object exports);
void RegisterOptim(Napi::Env env, Napi::Object exports);
void RegisterOptim8bit(Napi::Env env, Napi::Object exports);
void RegisterQuant(Napi::Env env, Napi::Object exports);
void RegisterRuntime(Napi::Env env, Napi::Object exports);
void RegisterDistributed(Napi::Env env, Napi::Object exports);
void RegisterLifeline(Napi::Env env, Napi::Object exports);
void RegisterLowRank(Napi::Env env, Napi::Object exports);

}  // namespace mx

// Declares an exported function whose body runs under mx::Guard.
// (js_ prefix: op names such as `select` or `free` would otherwise clash with libc.)
#define MX_FN(name) static Napi::Value name##_impl(const Napi::CallbackInfo& info); \
  static Napi::Value js_##name(const Napi::CallbackInfo& info) { return mx::Guard(info, [&] { return name##_impl(info); }); } \
  static Napi::Value name##_impl(const Napi::CallbackInfo& info)
#define MX_EXPORT(exports, name) exports.Set(#name, Napi::Function::New(env, js_##name, #name))

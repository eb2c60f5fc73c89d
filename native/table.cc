// The tensor table and the helpers every op uses.
#include "common.h"

#include <c10/util/Exception.h>
#include <unordered_map>

namespace mx {
namespace {

// Monotonic ids: a stale id (already freed) can never name a newer tensor, which lets the JS
// FinalizationRegistry free ids without coordinating with explicit dispose().
int64_t next_id = 1;
std::unordered_map<int64_t, at::Tensor> tensors;

// Native bytes visible to V8 (napi_adjust_external_memory), counted once per CPU storage shared by
// several handles (views), so that GC pressure reflects what JS keeps alive.
struct StorageUse { int64_t handles; int64_t bytes; };
std::unordered_map<const void*, StorageUse> storages;
int64_t external_bytes = 0;

const void* CpuStorageKey(const at::Tensor& t) {
  if (!t.defined() || !t.has_storage() || !t.device().is_cpu()) return nullptr;
  return t.storage().unsafeGetStorageImpl();
}

void Track(Napi::Env env, const at::Tensor& t) {
  const void* key = CpuStorageKey(t);
  if (!key) return;
  auto it = storages.find(key);
  if (it != storages.end()) { it->second.handles++; return; }
  int64_t bytes = static_cast<int64_t>(t.storage().nbytes());
  storages.emplace(key, StorageUse{1, bytes});
  external_bytes += bytes;
  Napi::MemoryManagement::AdjustExternalMemory(env, bytes);
}

void Untrack(Napi::Env env, const at::Tensor& t) {
  const void* key = CpuStorageKey(t);
  if (!key) return;
  auto it = storages.find(key);
  if (it == storages.end()) return;
  if (--it->second.handles > 0) return;
  external_bytes -= it->second.bytes;
  Napi::MemoryManagement::AdjustExternalMemory(env, -it->second.bytes);
  storages.erase(it);
}

}  // namespace

Napi::Value Put(Napi::Env env, at::Tensor t) {
  if (!t.defined()) return env.Null();
  int64_t id = next_id++;
  Track(env, t);
  tensors.emplace(id, std::move(t));
  return Napi::Number::New(env, static_cast<double>(id));
}

at::Tensor& Get(const Napi::Value& v) {
  if (!v.IsNumber()) throw ArgError("expected a tensor");
  int64_t id = v.As<Napi::Number>().Int64Value();
  auto it = tensors.find(id);
  if (it == tensors.end()) throw ArgError("tensor used after dispose()");
  return it->second;
}

std::optional<at::Tensor> GetOptional(const Napi::Value& v) {
  if (v.IsUndefined() || v.IsNull()) return std::nullopt;
  return Get(v);
}

std::vector<at::Tensor> GetList(const Napi::Value& v) {
  if (!v.IsArray()) throw ArgError("expected an array of tensors");
  auto arr = v.As<Napi::Array>();
  std::vector<at::Tensor> out;
  out.reserve(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++) out.push_back(Get(arr.Get(i)));
  return out;
}

Napi::Value PutList(Napi::Env env, const std::vector<at::Tensor>& ts) {
  auto arr = Napi::Array::New(env, ts.size());
  for (size_t i = 0; i < ts.size(); i++) arr.Set(static_cast<uint32_t>(i), Put(env, ts[i]));
  return arr;
}

bool Free(Napi::Env env, int64_t id) {
  auto it = tensors.find(id);
  if (it == tensors.end()) return false;
  Untrack(env, it->second);
  tensors.erase(it);
  return true;
}

size_t LiveCount() { return tensors.size(); }
int64_t ExternalBytes() { return external_bytes; }

// ---- arguments -------------------------------------------------------------------------------

std::vector<int64_t> IntList(const Napi::Value& v) {
  if (v.IsNumber()) return {v.As<Napi::Number>().Int64Value()};
  if (!v.IsArray()) throw ArgError("expected an array of integers");
  auto arr = v.As<Napi::Array>();
  std::vector<int64_t> out(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value e = arr.Get(i);
    if (!e.IsNumber()) throw ArgError("expected an array of integers");
    double d = e.As<Napi::Number>().DoubleValue();
    if (d != static_cast<double>(static_cast<int64_t>(d))) throw ArgError("expected integers, got " + std::to_string(d));
    out[i] = static_cast<int64_t>(d);
  }
  return out;
}

int64_t Int(const Napi::Value& v) {
  if (!v.IsNumber()) throw ArgError("expected an integer");
  return v.As<Napi::Number>().Int64Value();
}

double Num(const Napi::Value& v) {
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value() ? 1.0 : 0.0;
  if (!v.IsNumber()) throw ArgError("expected a number");
  return v.As<Napi::Number>().DoubleValue();
}

bool Bool(const Napi::Value& v) { return v.IsBoolean() ? v.As<Napi::Boolean>().Value() : v.ToBoolean().Value(); }

// Codes shared with src/tensor/dtype.ts.
static const at::ScalarType kDTypes[] = {
    at::kFloat, at::kDouble, at::kHalf, at::kBFloat16, at::kLong, at::kInt, at::kBool, at::kByte, at::kChar, at::kShort,
};

at::ScalarType DType(const Napi::Value& v) {
  int64_t code = Int(v);
  if (code < 0 || code >= static_cast<int64_t>(sizeof(kDTypes) / sizeof(kDTypes[0]))) throw ArgError("unknown dtype code");
  return kDTypes[code];
}

int DTypeCode(at::ScalarType t) {
  for (size_t i = 0; i < sizeof(kDTypes) / sizeof(kDTypes[0]); i++) if (kDTypes[i] == t) return static_cast<int>(i);
  throw ArgError(std::string("dtype not supported by mixlora: ") + c10::toString(t));
}

at::Device Device(const Napi::Value& v) {
  if (v.IsUndefined() || v.IsNull()) return at::Device(at::kCPU);
  if (!v.IsString()) throw ArgError("expected a device name");
  return at::Device(v.As<Napi::String>().Utf8Value());
}

at::TensorOptions Options(const Napi::Value& dtype, const Napi::Value& device) {
  return at::TensorOptions().dtype(DType(dtype)).device(Device(device));
}

std::optional<std::vector<int64_t>> OptDims(const Napi::Value& v) {
  if (v.IsUndefined() || v.IsNull()) return std::nullopt;
  return IntList(v);
}

Napi::Value Guard(const Napi::CallbackInfo& info, const std::function<Napi::Value()>& body) {
  Napi::Env env = info.Env();
  try {
    return body();
  } catch (const Napi::Error&) {
    throw;
  } catch (const ArgError& e) {
    throw Napi::TypeError::New(env, e.what());
  } catch (const c10::Error& e) {
    // what_without_backtrace(): libtorch's message without the C++ stack, which means nothing to users.
    throw Napi::Error::New(env, e.what_without_backtrace());
  } catch (const std::bad_alloc&) {
    throw Napi::Error::New(env, "out of memory (native allocation failed)");
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  } catch (...) {
    throw Napi::Error::New(env, "unknown native error");
  }
}

}  // namespace mx

// The tensor table and the helpers every op uses.
#include "common.h"

#include <c10/util/Exception.h>
#include <unordered_map>
#include <vector>

namespace mx {
namespace {

// Slots with generations: an id is slot + generation · 2^24. A freed slot is reused with the next
// generation, so a stale id (already freed) never names a newer tensor; that lets the JS
// FinalizationRegistry free ids without coordinating with explicit dispose(). Lookups are an index.
constexpr int64_t kSlotBits = 24;
constexpr int64_t kSlotMask = (int64_t{1} << kSlotBits) - 1;
struct Slot { at::Tensor tensor; int64_t generation = 0; };
std::vector<Slot> slots;
std::vector<int64_t> free_slots;
size_t live = 0;

// Native bytes visible to V8 (napi_adjust_external_memory), counted once per CPU storage shared by
// several handles (views). Storages under 64 KiB are not counted: they cannot matter for GC pressure
// and skipping them keeps small ops cheap. Reports to V8 are batched in 1 MiB steps.
constexpr int64_t kTrackMinBytes = 64 * 1024;
constexpr int64_t kReportStep = 1 << 20;
struct StorageUse { int64_t handles; int64_t bytes; };
std::unordered_map<const void*, StorageUse> storages;
int64_t external_bytes = 0;
int64_t reported_bytes = 0;

void Report(Napi::Env env) {
  int64_t delta = external_bytes - reported_bytes;
  if (delta >= kReportStep || delta <= -kReportStep) {
    Napi::MemoryManagement::AdjustExternalMemory(env, delta);
    reported_bytes = external_bytes;
  }
}

const void* TrackedStorageKey(const at::Tensor& t) {
  if (!t.has_storage() || !t.device().is_cpu()) return nullptr;
  const auto& st = t.storage();
  if (static_cast<int64_t>(st.nbytes()) < kTrackMinBytes) return nullptr;
  return st.unsafeGetStorageImpl();
}

void Track(Napi::Env env, const at::Tensor& t) {
  const void* key = TrackedStorageKey(t);
  if (!key) return;
  auto it = storages.find(key);
  if (it != storages.end()) { it->second.handles++; return; }
  int64_t bytes = static_cast<int64_t>(t.storage().nbytes());
  storages.emplace(key, StorageUse{1, bytes});
  external_bytes += bytes;
  Report(env);
}

void Untrack(Napi::Env env, const at::Tensor& t) {
  const void* key = TrackedStorageKey(t);
  if (!key) return;
  auto it = storages.find(key);
  if (it == storages.end()) return;
  if (--it->second.handles > 0) return;
  external_bytes -= it->second.bytes;
  storages.erase(it);
  Report(env);
}

Slot* Lookup(int64_t id) {
  int64_t index = id & kSlotMask;
  if (id <= 0 || index >= static_cast<int64_t>(slots.size())) return nullptr;
  Slot& s = slots[index];
  if (s.generation != (id >> kSlotBits) || !s.tensor.defined()) return nullptr;
  return &s;
}

}  // namespace

Napi::Value Put(Napi::Env env, at::Tensor t) {
  if (!t.defined()) return env.Null();
  Track(env, t);
  int64_t index;
  if (!free_slots.empty()) {
    index = free_slots.back();
    free_slots.pop_back();
  } else {
    if (static_cast<int64_t>(slots.size()) > kSlotMask) throw std::runtime_error("too many live tensors (16M); dispose some");
    index = static_cast<int64_t>(slots.size());
    slots.emplace_back();
    if (index == 0) { slots.emplace_back(); index = 1; }  // id 0 is never valid
  }
  Slot& s = slots[index];
  s.generation++;
  s.tensor = std::move(t);
  live++;
  return Napi::Number::New(env, static_cast<double>((s.generation << kSlotBits) | index));
}

at::Tensor& Get(const Napi::Value& v) {
  if (!v.IsNumber()) throw ArgError("expected a tensor");
  Slot* s = Lookup(v.As<Napi::Number>().Int64Value());
  if (!s) throw ArgError("tensor used after dispose()");
  return s->tensor;
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
  Slot* s = Lookup(id);
  if (!s) return false;
  Untrack(env, s->tensor);
  s->tensor.reset();
  free_slots.push_back(id & kSlotMask);
  live--;
  return true;
}

size_t LiveCount() { return live; }
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

void Rethrow(Napi::Env env) {
  try {
    throw;
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

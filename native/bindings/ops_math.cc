// Elementwise arithmetic and math, reductions, matrix products, in-place updates.
// Families of ops share one entry point with an op code (unary, binary, scalar, inplace, reduce); the
// code tables are exported by name (unaryNames() ...) so the TypeScript side binds them by name and
// never drifts out of step.
#include "common.h"

namespace {
using namespace mx;

using Unary = at::Tensor (*)(const at::Tensor&);
struct UnaryOp { const char* name; Unary fn; };
const UnaryOp kUnary[] = {
    {"neg", [](const at::Tensor& a) { return a.neg(); }},
    {"abs", [](const at::Tensor& a) { return a.abs(); }},
    {"exp", [](const at::Tensor& a) { return a.exp(); }},
    {"log", [](const at::Tensor& a) { return a.log(); }},
    {"log1p", [](const at::Tensor& a) { return a.log1p(); }},
    {"sqrt", [](const at::Tensor& a) { return a.sqrt(); }},
    {"rsqrt", [](const at::Tensor& a) { return a.rsqrt(); }},
    {"tanh", [](const at::Tensor& a) { return a.tanh(); }},
    {"sigmoid", [](const at::Tensor& a) { return a.sigmoid(); }},
    {"silu", [](const at::Tensor& a) { return at::silu(a); }},
    {"relu", [](const at::Tensor& a) { return a.relu(); }},
    {"gelu", [](const at::Tensor& a) { return at::gelu(a); }},
    {"geluTanh", [](const at::Tensor& a) { return at::gelu(a, "tanh"); }},
    {"sin", [](const at::Tensor& a) { return a.sin(); }},
    {"cos", [](const at::Tensor& a) { return a.cos(); }},
    {"floor", [](const at::Tensor& a) { return a.floor(); }},
    {"ceil", [](const at::Tensor& a) { return a.ceil(); }},
    {"round", [](const at::Tensor& a) { return a.round(); }},
    {"sign", [](const at::Tensor& a) { return a.sign(); }},
    {"reciprocal", [](const at::Tensor& a) { return a.reciprocal(); }},
    {"square", [](const at::Tensor& a) { return a.square(); }},
    {"erf", [](const at::Tensor& a) { return a.erf(); }},
    {"logicalNot", [](const at::Tensor& a) { return a.logical_not(); }},
    {"isnan", [](const at::Tensor& a) { return a.isnan(); }},
    {"isfinite", [](const at::Tensor& a) { return a.isfinite(); }},
    {"detach", [](const at::Tensor& a) { return a.detach(); }},
    {"clone", [](const at::Tensor& a) { return a.clone(); }},
    {"contiguous", [](const at::Tensor& a) { return a.contiguous(); }},
    {"zerosLike", [](const at::Tensor& a) { return at::zeros_like(a); }},
    {"onesLike", [](const at::Tensor& a) { return at::ones_like(a); }},
};

using Binary = at::Tensor (*)(const at::Tensor&, const at::Tensor&);
struct BinaryOp { const char* name; Binary fn; };
const BinaryOp kBinary[] = {
    {"add", [](const at::Tensor& a, const at::Tensor& b) { return at::add(a, b); }},
    {"sub", [](const at::Tensor& a, const at::Tensor& b) { return at::sub(a, b); }},
    {"mul", [](const at::Tensor& a, const at::Tensor& b) { return at::mul(a, b); }},
    {"div", [](const at::Tensor& a, const at::Tensor& b) { return at::div(a, b); }},
    {"pow", [](const at::Tensor& a, const at::Tensor& b) { return at::pow(a, b); }},
    {"maximum", [](const at::Tensor& a, const at::Tensor& b) { return at::maximum(a, b); }},
    {"minimum", [](const at::Tensor& a, const at::Tensor& b) { return at::minimum(a, b); }},
    {"remainder", [](const at::Tensor& a, const at::Tensor& b) { return at::remainder(a, b); }},
    {"eq", [](const at::Tensor& a, const at::Tensor& b) { return at::eq(a, b); }},
    {"ne", [](const at::Tensor& a, const at::Tensor& b) { return at::ne(a, b); }},
    {"lt", [](const at::Tensor& a, const at::Tensor& b) { return at::lt(a, b); }},
    {"le", [](const at::Tensor& a, const at::Tensor& b) { return at::le(a, b); }},
    {"gt", [](const at::Tensor& a, const at::Tensor& b) { return at::gt(a, b); }},
    {"ge", [](const at::Tensor& a, const at::Tensor& b) { return at::ge(a, b); }},
    {"logicalAnd", [](const at::Tensor& a, const at::Tensor& b) { return at::logical_and(a, b); }},
    {"logicalOr", [](const at::Tensor& a, const at::Tensor& b) { return at::logical_or(a, b); }},
    {"matmul", [](const at::Tensor& a, const at::Tensor& b) { return at::matmul(a, b); }},
    {"bmm", [](const at::Tensor& a, const at::Tensor& b) { return at::bmm(a, b); }},
    {"outer", [](const at::Tensor& a, const at::Tensor& b) { return at::outer(a, b); }},
};

using Scalar = at::Tensor (*)(const at::Tensor&, const at::Scalar&);
struct ScalarOp { const char* name; Scalar fn; };
const ScalarOp kScalar[] = {
    {"add", [](const at::Tensor& a, const at::Scalar& s) { return at::add(a, s); }},
    {"sub", [](const at::Tensor& a, const at::Scalar& s) { return at::sub(a, s); }},
    {"mul", [](const at::Tensor& a, const at::Scalar& s) { return at::mul(a, s); }},
    {"div", [](const at::Tensor& a, const at::Scalar& s) { return at::div(a, s); }},
    {"pow", [](const at::Tensor& a, const at::Scalar& s) { return at::pow(a, s); }},
    {"rsub", [](const at::Tensor& a, const at::Scalar& s) { return at::rsub(a, s); }},
    {"rdiv", [](const at::Tensor& a, const at::Scalar& s) { return at::reciprocal(a).mul(s); }},
    {"remainder", [](const at::Tensor& a, const at::Scalar& s) { return at::remainder(a, s); }},
    {"eq", [](const at::Tensor& a, const at::Scalar& s) { return at::eq(a, s); }},
    {"ne", [](const at::Tensor& a, const at::Scalar& s) { return at::ne(a, s); }},
    {"lt", [](const at::Tensor& a, const at::Scalar& s) { return at::lt(a, s); }},
    {"le", [](const at::Tensor& a, const at::Scalar& s) { return at::le(a, s); }},
    {"gt", [](const at::Tensor& a, const at::Scalar& s) { return at::gt(a, s); }},
    {"ge", [](const at::Tensor& a, const at::Scalar& s) { return at::ge(a, s); }},
    {"fullLike", [](const at::Tensor& a, const at::Scalar& s) { return at::full_like(a, s); }},
};

at::Scalar ToScalar(const Napi::Value& v) {
  if (v.IsBoolean()) return at::Scalar(v.As<Napi::Boolean>().Value());
  double d = Num(v);
  // Keep integer scalars integral so int tensors stay int (torch semantics of `t + 1`).
  if (d == static_cast<double>(static_cast<int64_t>(d)) && std::abs(d) < 9.0e15) return at::Scalar(static_cast<int64_t>(d));
  return at::Scalar(d);
}

// In place (optimizers, caches, initialisation); callers guarantee no autograd conflict.
// inplace(code, id, arg, alpha): arg is a scalar or a tensor id, as the op needs; alpha only for add_.
using Inplace = void (*)(at::Tensor&, const Napi::Value& arg, const Napi::Value& alpha);
struct InplaceOp { const char* name; Inplace fn; };
const InplaceOp kInplace[] = {
    {"zero_", [](at::Tensor& a, const Napi::Value&, const Napi::Value&) { a.zero_(); }},
    {"fill_", [](at::Tensor& a, const Napi::Value& s, const Napi::Value&) { a.fill_(ToScalar(s)); }},
    {"mulScalar_", [](at::Tensor& a, const Napi::Value& s, const Napi::Value&) { a.mul_(ToScalar(s)); }},
    {"addScalar_", [](at::Tensor& a, const Napi::Value& s, const Napi::Value&) { a.add_(ToScalar(s)); }},
    {"copy_", [](at::Tensor& a, const Napi::Value& b, const Napi::Value&) { a.copy_(Get(b)); }},
    {"add_", [](at::Tensor& a, const Napi::Value& b, const Napi::Value& alpha) {
       a.add_(Get(b), alpha.IsUndefined() ? at::Scalar(1) : ToScalar(alpha));
     }},
    {"sub_", [](at::Tensor& a, const Napi::Value& b, const Napi::Value&) { a.sub_(Get(b)); }},
    {"mul_", [](at::Tensor& a, const Napi::Value& b, const Napi::Value&) { a.mul_(Get(b)); }},
    {"div_", [](at::Tensor& a, const Napi::Value& b, const Napi::Value&) { a.div_(Get(b)); }},
};

// Reductions over `d` (every dim when the caller passed none; then `dims` is false). all/any take one
// dim, or none.
using Reduce = at::Tensor (*)(const at::Tensor&, at::IntArrayRef d, bool dims, bool keep);
struct ReduceOp { const char* name; Reduce fn; };
const ReduceOp kReduce[] = {
    {"sum", [](const at::Tensor& a, at::IntArrayRef d, bool dims, bool keep) {
       return dims ? a.sum(d, keep) : (keep ? a.sum(d, true) : a.sum());
     }},
    {"mean", [](const at::Tensor& a, at::IntArrayRef d, bool dims, bool keep) {
       return dims ? a.mean(d, keep) : (keep ? a.mean(d, true) : a.mean());
     }},
    {"amax", [](const at::Tensor& a, at::IntArrayRef d, bool, bool keep) { return a.amax(d, keep); }},
    {"amin", [](const at::Tensor& a, at::IntArrayRef d, bool, bool keep) { return a.amin(d, keep); }},
    {"logsumexp", [](const at::Tensor& a, at::IntArrayRef d, bool, bool keep) { return a.logsumexp(d, keep); }},
    {"all", [](const at::Tensor& a, at::IntArrayRef d, bool dims, bool keep) {
       return dims ? (d.size() == 1 ? a.all(d[0], keep) : throw ArgError("all() takes one dim")) : a.all();
     }},
    {"any", [](const at::Tensor& a, at::IntArrayRef d, bool dims, bool keep) {
       return dims ? (d.size() == 1 ? a.any(d[0], keep) : throw ArgError("any() takes one dim")) : a.any();
     }},
};

MX_FN(unaryNames) { return Names(info.Env(), kUnary); }
MX_FN(binaryNames) { return Names(info.Env(), kBinary); }
MX_FN(scalarNames) { return Names(info.Env(), kScalar); }
MX_FN(inplaceNames) { return Names(info.Env(), kInplace); }
MX_FN(reduceNames) { return Names(info.Env(), kReduce); }
MX_FN(unary) { return Put(info.Env(), Op(kUnary, info[0]).fn(Get(info[1]))); }
MX_FN(binary) { return Put(info.Env(), Op(kBinary, info[0]).fn(Get(info[1]), Get(info[2]))); }
MX_FN(scalar) { return Put(info.Env(), Op(kScalar, info[0]).fn(Get(info[1]), ToScalar(info[2]))); }

// addScaled(a, b, alpha) = a + alpha * b in one kernel.
MX_FN(addScaled) { return Put(info.Env(), at::add(Get(info[0]), Get(info[1]), ToScalar(info[2]))); }
// clamp(a, min|null, max|null)
MX_FN(clamp) {
  c10::optional<at::Scalar> lo, hi;
  if (!info[1].IsNull() && !info[1].IsUndefined()) lo = ToScalar(info[1]);
  if (!info[2].IsNull() && !info[2].IsUndefined()) hi = ToScalar(info[2]);
  return Put(info.Env(), at::clamp(Get(info[0]), lo, hi));
}
// linear(x, weight, bias|null) = x Wᵀ + b
MX_FN(linear) {
  auto bias = GetOptional(info[2]);
  return Put(info.Env(), Linear(Get(info[0]), Get(info[1]), bias ? c10::optional<at::Tensor>(*bias) : c10::nullopt));
}

// inplace(code, id, arg, alpha)
MX_FN(inplace) {
  Op(kInplace, info[0]).fn(Get(info[1]), info[2], info[3]);
  return info.Env().Undefined();
}

// reduce(code, id, dims|null, keepdim)
MX_FN(reduce) {
  const ReduceOp& op = Op(kReduce, info[0]);
  at::Tensor& a = Get(info[1]);
  auto dims = OptDims(info[2]);
  std::vector<int64_t> all;
  if (!dims) { all.resize(a.dim()); for (int64_t i = 0; i < a.dim(); i++) all[i] = i; }
  at::IntArrayRef d = dims ? at::IntArrayRef(*dims) : at::IntArrayRef(all);
  return Put(info.Env(), op.fn(a, d, dims.has_value(), Bool(info[3])));
}
// maxDim(id, dim, keepdim) -> [values, indices]; minDim likewise.
MX_FN(maxDim) { auto r = Get(info[0]).max(Int(info[1]), Bool(info[2])); return PutList(info.Env(), {std::get<0>(r), std::get<1>(r)}); }
MX_FN(minDim) { auto r = Get(info[0]).min(Int(info[1]), Bool(info[2])); return PutList(info.Env(), {std::get<0>(r), std::get<1>(r)}); }
// argmax(id, dim|null, keepdim)
MX_FN(argmax) {
  at::Tensor& a = Get(info[0]);
  if (info[1].IsNull() || info[1].IsUndefined()) return Put(info.Env(), a.argmax());
  return Put(info.Env(), a.argmax(Int(info[1]), Bool(info[2])));
}
// norm(id, p, dims|null, keepdim)
MX_FN(norm) {
  at::Tensor& a = Get(info[0]);
  auto dims = OptDims(info[2]);
  if (!dims) return Put(info.Env(), at::norm(a, Num(info[1])));
  return Put(info.Env(), at::norm(a, at::Scalar(Num(info[1])), *dims, Bool(info[3])));
}
// variance(id, dims|null, unbiased, keepdim)
MX_FN(variance) {
  at::Tensor& a = Get(info[0]);
  auto dims = OptDims(info[1]);
  if (!dims) return Put(info.Env(), a.var(Bool(info[2])));
  return Put(info.Env(), a.var(*dims, Bool(info[2]), Bool(info[3])));
}
MX_FN(cumsum) { return Put(info.Env(), Get(info[0]).cumsum(Int(info[1]))); }

}  // namespace

namespace mx {
void RegisterMath(Napi::Env env, Napi::Object exports) {
  MX_EXPORT(exports, unaryNames);
  MX_EXPORT(exports, binaryNames);
  MX_EXPORT(exports, scalarNames);
  MX_EXPORT(exports, inplaceNames);
  MX_EXPORT(exports, reduceNames);
  MX_EXPORT(exports, unary);
  MX_EXPORT(exports, binary);
  MX_EXPORT(exports, scalar);
  MX_EXPORT(exports, addScaled);
  MX_EXPORT(exports, clamp);
  MX_EXPORT(exports, linear);
  MX_EXPORT(exports, inplace);
  MX_EXPORT(exports, reduce);
  MX_EXPORT(exports, maxDim);
  MX_EXPORT(exports, minDim);
  MX_EXPORT(exports, argmax);
  MX_EXPORT(exports, norm);
  MX_EXPORT(exports, variance);
  MX_EXPORT(exports, cumsum);
}
}  // namespace mx

// Autograd: gradients, backward passes, grad mode.
#include "common.h"

#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>

namespace {
using namespace mx;

MX_FN(setRequiresGrad) { Get(info[0]).set_requires_grad(Bool(info[1])); return info.Env().Undefined(); }
MX_FN(isLeaf) { return Napi::Boolean::New(info.Env(), Get(info[0]).is_leaf()); }
MX_FN(gradFnName) {
  const auto& fn = Get(info[0]).grad_fn();
  return fn ? Napi::Value(Napi::String::New(info.Env(), fn->name())) : info.Env().Null();
}

// backward(outputs[], grads[] (null entries for scalars), retainGraph)
MX_FN(backward) {
  auto outs = GetList(info[0]);
  std::vector<at::Tensor> grads;
  auto arr = info[1].As<Napi::Array>();
  if (arr.Length() != outs.size()) throw ArgError("backward: one gradient (or null) per output");
  for (uint32_t i = 0; i < arr.Length(); i++) {
    auto g = GetOptional(arr.Get(i));
    grads.push_back(g ? *g : at::Tensor());
  }
  bool retain = Bool(info[2]);
  torch::autograd::backward(outs, grads, retain, false);
  return info.Env().Undefined();
}

MX_FN(grad) { return Put(info.Env(), Get(info[0]).grad()); }
MX_FN(setGrad) {
  auto g = GetOptional(info[1]);
  Get(info[0]).mutable_grad() = g ? *g : at::Tensor();
  return info.Env().Undefined();
}
// zeroGrad(ids[]): drops the gradients (PyTorch's zero_grad(set_to_none=True)).
MX_FN(zeroGrad) {
  for (auto& t : GetList(info[0])) t.mutable_grad().reset();
  return info.Env().Undefined();
}
MX_FN(setGradEnabled) { at::GradMode::set_enabled(Bool(info[0])); return info.Env().Undefined(); }
MX_FN(isGradEnabled) { return Napi::Boolean::New(info.Env(), at::GradMode::is_enabled()); }

}  // namespace

namespace mx {
void RegisterAutograd(Napi::Env env, Napi::Object exports) {
  MX_EXPORT(exports, setRequiresGrad);
  MX_EXPORT(exports, isLeaf);
  MX_EXPORT(exports, gradFnName);
  MX_EXPORT(exports, backward);
  MX_EXPORT(exports, grad);
  MX_EXPORT(exports, setGrad);
  MX_EXPORT(exports, zeroGrad);
  MX_EXPORT(exports, setGradEnabled);
  MX_EXPORT(exports, isGradEnabled);
}
}  // namespace mx

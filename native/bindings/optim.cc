// Optimizer updates over many parameters in one call: the same arithmetic, in the same order, as
// PyTorch's single-tensor AdamW and SGD, so states saved by either are interchangeable and steps
// reproduce bit-exactly on the same machine. Optimizer state lives in ordinary tensors owned by JS.
#include "common.h"

#include <ATen/core/grad_mode.h>

#include <cmath>

namespace {
using namespace mx;

// adamw(params[], expAvg[], expAvgSq[], step, lr, beta1, beta2, eps, weightDecay)
// `step` is the step number after this update (1 for the first). Params without a gradient are skipped.
MX_FN(adamw) {
  auto params = GetList(info[0]);
  auto m = GetList(info[1]);
  auto v = GetList(info[2]);
  if (m.size() != params.size() || v.size() != params.size()) throw ArgError("adamw: one state pair per parameter");
  double step = Num(info[3]), lr = Num(info[4]), b1 = Num(info[5]), b2 = Num(info[6]), eps = Num(info[7]), wd = Num(info[8]);
  at::NoGradGuard no_grad;
  double bc1 = 1 - std::pow(b1, step);
  double bc2_sqrt = std::sqrt(1 - std::pow(b2, step));
  double step_size = lr / bc1;
  for (size_t i = 0; i < params.size(); i++) {
    at::Tensor& p = params[i];
    const at::Tensor& g = p.grad();
    if (!g.defined()) continue;
    p.mul_(1 - lr * wd);
    m[i].lerp_(g, 1 - b1);
    v[i].mul_(b2).addcmul_(g, g, 1 - b2);
    at::Tensor denom = (v[i].sqrt() / bc2_sqrt).add_(eps);
    p.addcdiv_(m[i], denom, -step_size);
  }
  return info.Env().Undefined();
}

// sgd(params[], buffers[] (null before the first step), lr, momentum, dampening, weightDecay, nesterov)
// -> the momentum buffers (new ones where null was given), or [] when momentum is 0.
MX_FN(sgd) {
  auto params = GetList(info[0]);
  auto bufArr = info[1].As<Napi::Array>();
  double lr = Num(info[2]), momentum = Num(info[3]), dampening = Num(info[4]), wd = Num(info[5]);
  bool nesterov = Bool(info[6]);
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> bufs(params.size());
  for (size_t i = 0; i < params.size(); i++) {
    at::Tensor& p = params[i];
    const at::Tensor& g = p.grad();
    auto existing = i < bufArr.Length() ? GetOptional(bufArr.Get(static_cast<uint32_t>(i))) : std::nullopt;
    if (existing) bufs[i] = *existing;
    if (!g.defined()) continue;
    at::Tensor d_p = wd != 0 ? g.add(p, wd) : g;
    if (momentum != 0) {
      if (!bufs[i].defined()) bufs[i] = d_p.clone().detach();
      else bufs[i].mul_(momentum).add_(d_p, 1 - dampening);
      d_p = nesterov ? d_p.add(bufs[i], momentum) : bufs[i];
    }
    p.add_(d_p, -lr);
  }
  if (momentum == 0) return Napi::Array::New(info.Env(), 0);
  auto out = Napi::Array::New(info.Env(), bufs.size());
  for (size_t i = 0; i < bufs.size(); i++) {
    if (!bufs[i].defined()) bufs[i] = at::zeros_like(params[i]);
    out.Set(static_cast<uint32_t>(i), Put(info.Env(), bufs[i]));
  }
  return out;
}

// clipGradNorm(params[], maxNorm) -> total 2-norm before clipping (torch.nn.utils.clip_grad_norm_).
MX_FN(clipGradNorm) {
  auto params = GetList(info[0]);
  double max_norm = Num(info[1]);
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> norms;
  std::vector<at::Tensor> grads;
  for (auto& p : params) {
    if (!p.grad().defined()) continue;
    grads.push_back(p.grad());
    norms.push_back(at::norm(p.grad(), 2));
  }
  if (norms.empty()) return Napi::Number::New(info.Env(), 0.0);
  at::Tensor total = at::norm(at::stack(norms), 2);
  if (std::isfinite(max_norm)) {
    at::Tensor coef = (max_norm / (total + 1e-6)).clamp_max(1.0);
    for (auto& g : grads) g.mul_(coef);
  }
  return Napi::Number::New(info.Env(), total.item<double>());
}

}  // namespace

namespace mx {
void RegisterOptim(Napi::Env env, Napi::Object exports) {
  MX_EXPORT(exports, adamw);
  MX_EXPORT(exports, sgd);
  MX_EXPORT(exports, clipGradNorm);
}
}  // namespace mx

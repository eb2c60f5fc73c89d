// Semantics: Linear(x [.., in], W [out, in], b [out]?) = x Wᵀ + b [.., out], differentiable; the path it takes
// (oneDNN, widened narrow weight, small rows, ATen) never changes what it computes beyond rounding.
//
// x Wᵀ + b on the CPU through oneDNN where ATen would call the BLAS. PyTorch's x86 wheels route float32
// matmuls to MKL, whose kernels on the AMD CPUs measured are as fast at best and at worst half as fast as
// oneDNN's for a training batch's shapes (bench/python/gemm_backends.py; BENCHMARKS.md, "float32 products");
// ATen exposes oneDNN's float32 linear as the operator mkldnn::_linear_pointwise (what torch.compile's CPU
// backend emits). It has no autograd formula, so OneDnnLinear below supplies one: the input gradient dy W
// through oneDNN again (with Wᵀ as its weight), the weight gradient (adapters' A and B only; frozen weights
// have none) dyᵀ x through whichever of the two is faster for its shape. Other dtypes (bfloat16 already
// reaches oneDNN through ATen), CUDA, and a libtorch without the operator (Debian's 1.13) take at::linear.
// MIXLORA_GEMM=aten turns the oneDNN path off.
//
// A frozen bfloat16 or float16 weight under float32 activations (a bfloat16 model computing in float32 on a CPU
// without bfloat16 arithmetic, src/tensor/compute-mode.ts) is widened to float32 for each product, exactly
// (every bfloat16 value is a float32), and multiplied as a float32 weight is; WidenedLinear keeps only the
// narrow weight for the backward and widens it again there, so a training step never holds the model in
// float32.
#include "common.h"

#include <cstdlib>
#include <cstring>

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>

namespace mx {
namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

const c10::OperatorHandle* OneDnnLinearOp() {
  static const c10::OperatorHandle* op = []() -> const c10::OperatorHandle* {
    const char* env = std::getenv("MIXLORA_GEMM");
    if (env && std::strcmp(env, "aten") == 0) return nullptr;
    auto found = c10::Dispatcher::singleton().findSchema({"mkldnn::_linear_pointwise", ""});
    if (!found) return nullptr;
    static c10::OperatorHandle handle = *found;
    return &handle;
  }();
  return op;
}

// x [N, in] (contiguous) times w [out, in] (any strides) plus b [out] -> [N, out], through oneDNN.
at::Tensor OneDnn2d(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b) {
  torch::jit::Stack stack;
  stack.reserve(6);
  stack.emplace_back(x);
  stack.emplace_back(w);
  stack.emplace_back(b ? c10::IValue(*b) : c10::IValue());
  stack.emplace_back(std::string("none"));
  stack.emplace_back(c10::List<c10::optional<at::Scalar>>());
  stack.emplace_back(c10::IValue());
  OneDnnLinearOp()->callBoxed(&stack);
  return stack.back().toTensor();
}

// oneDNN compiles a kernel for each new shape (about 5 ms on first use), and row counts vary from call to
// call (a MixLoRA expert's tokens, a serving batch): rows are padded with zeros up to a multiple of an
// eighth of their power of two (at most 12.5% more work), so that about 8 shapes per octave ever occur.
int64_t PaddedRows(int64_t n) {
  int64_t step = 1;
  while (step * 16 <= n) step *= 2;  // step = 2^(⌊log2 n⌋ - 3), at least 1
  return (n + step - 1) / step * step;
}

// t [n, k] with zero rows appended up to `rows`: one allocation, t copied in, the tail zeroed.
at::Tensor PadRows(const at::Tensor& t, int64_t rows) {
  const int64_t n = t.size(0);
  if (n == rows) return t;
  at::Tensor padded = at::empty({rows, t.size(1)}, t.options());  // [rows, k]
  padded.narrow(0, 0, n).copy_(t);
  padded.narrow(0, n, rows - n).zero_();
  return padded;
}

// x [.., in] -> [.., out]
at::Tensor OneDnnNd(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b) {
  std::vector<int64_t> outShape(x.sizes().begin(), x.sizes().end());
  outShape.back() = w.size(0);
  const at::Tensor x2 = x.reshape({-1, x.size(-1)}).contiguous();  // [n, in]
  const int64_t n = x2.size(0);
  return OneDnn2d(PadRows(x2, PaddedRows(n)), w, b).narrow(0, 0, n).view(outShape);  // [.., out]
}

// dyᵀ x for dy [n, out], x [n, in] -> [out, in] through oneDNN (xᵀ as its weight), n padded as above.
at::Tensor OneDnnWeightGrad(const at::Tensor& dy, const at::Tensor& x) {
  const int64_t rows = PaddedRows(dy.size(0));
  return OneDnn2d(PadRows(dy, rows).t().contiguous(), PadRows(x, rows).t(), c10::nullopt);  // [out, in]
}

struct OneDnnLinear : public torch::autograd::Function<OneDnnLinear> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            const c10::optional<at::Tensor>& b) {
    // x is kept only when the weight trains (its gradient needs it); a frozen projection keeps W alone.
    ctx->save_for_backward({w, w.requires_grad() ? x : at::Tensor()});
    // An absent bias is no input of the node (needs_input_grad has no index for it).
    ctx->saved_data["bias"] = b.has_value() && b->defined();
    return OneDnnNd(x, w, b);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& w = saved[0];
    const at::Tensor& dy = grads[0];  // [.., out]
    at::Tensor dx, dw, db;
    const bool biasGrad = ctx->saved_data["bias"].toBool() && ctx->needs_input_grad(2);
    if (ctx->needs_input_grad(0)) dx = OneDnnNd(dy, w.t(), c10::nullopt);  // [.., in]
    if (ctx->needs_input_grad(1) || biasGrad) {
      const at::Tensor dy2 = dy.reshape({-1, dy.size(-1)});  // [N, out]
      if (ctx->needs_input_grad(1)) {
        const at::Tensor x2 = saved[1].reshape({-1, saved[1].size(-1)});  // [N, in]
        // dyᵀ x [out, in]: oneDNN (with xᵀ as its weight) where in ≥ out, as for LoRA's A (2-4× the BLAS's
        // speed there); the BLAS for a wide out over a narrow in (LoRA's B), where it is as fast or faster.
        dw = x2.size(1) >= dy2.size(1) ? OneDnnWeightGrad(dy2, x2) : at::mm(dy2.t(), x2);
      }
      if (biasGrad) db = dy2.sum(0);  // [out]
    }
    return {dx, dw, db};
  }
};

bool OneDnnApplies(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b) {
  if (!x.device().is_cpu() || x.scalar_type() != at::kFloat || w.scalar_type() != at::kFloat) return false;
  if (w.dim() != 2 || x.dim() < 1 || x.numel() == 0 || x.size(-1) != w.size(1)) return false;
  if (b && b->scalar_type() != at::kFloat) return false;
  return OneDnnLinearOp() != nullptr;
}

// x Wᵀ + b with everything float32, outside autograd: oneDNN where it applies, else ATen.
at::Tensor Float32Product(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b) {
  return OneDnnApplies(x, w, b) ? OneDnnNd(x, w, b) : at::linear(x, w, b);
}

bool IsNarrowFloat(const at::Tensor& t) {
  return t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf;
}

// float32 x against a bfloat16/float16 weight (and a bias float32 or as narrow) on x's device.
bool Widens(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b) {
  if (x.scalar_type() != at::kFloat || !IsNarrowFloat(w) || w.device() != x.device()) return false;
  return !b || b->scalar_type() == at::kFloat || b->scalar_type() == w.scalar_type();
}

c10::optional<at::Tensor> WidenBias(const c10::optional<at::Tensor>& b) {
  if (!b) return c10::nullopt;
  return b->to(at::kFloat);
}

// The frozen narrow weight widened per product (see the top of this file): the forward and the input
// gradient each widen W to float32 and free it; only W itself is saved.
struct WidenedLinear : public torch::autograd::Function<WidenedLinear> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            const c10::optional<at::Tensor>& b) {
    ctx->save_for_backward({w});
    return Float32Product(x, w.to(at::kFloat), WidenBias(b));
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor& dy = grads[0];  // [.., out]
    at::Tensor dx;
    if (ctx->needs_input_grad(0)) {
      const at::Tensor w = ctx->get_saved_variables()[0].to(at::kFloat);  // [out, in]
      const at::Tensor wt = w.t();                                           // [in, out]
      dx = OneDnnApplies(dy, wt, c10::nullopt) ? OneDnnNd(dy, wt, c10::nullopt) : at::matmul(dy, w);  // [.., in]
    }
    return {dx, at::Tensor(), at::Tensor()};
  }
};
}  // namespace

at::Tensor Linear(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b, bool small) {
  const bool tracked = at::GradMode::is_enabled() &&
                       (x.requires_grad() || w.requires_grad() || (b && b->requires_grad()));
  // A few rows outside autograd (decode steps): dot products streaming the weight (small_gemm.cc), which
  // reads a bfloat16 weight as such.
  if (small && !tracked && SmallLinearApplies(x, w, b)) return SmallLinear(x, w, b);
  if (Widens(x, w, b)) {
    if (!tracked) return Float32Product(x, w.to(at::kFloat), WidenBias(b));
    // A weight or bias that trains (none of mixlora's do) differentiates through the conversions.
    if (w.requires_grad() || (b && b->requires_grad())) return Linear(x, w.to(at::kFloat), WidenBias(b), false);
    return WidenedLinear::apply(x, w, b);
  }
  if (!OneDnnApplies(x, w, b)) return at::linear(x, w, b);
  return tracked ? OneDnnLinear::apply(x, w, b) : OneDnnNd(x, w, b);
}

const char* LinearBackend() { return OneDnnLinearOp() ? "onednn" : "aten"; }
}  // namespace mx

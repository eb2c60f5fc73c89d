// Semantics: swiglu(gate, up) = silu(gate) · up; sumCrossEntropy(logits [N, C], target [N]) =
// Σᵢ −log softmax(logitsᵢ)[targetᵢ]; both differentiable, saving only what their backward reads.
//
// Fused operations with their own backward, where autograd's composition would keep more activations
// alive than the gradient needs.
#include "common.h"

#include <torch/csrc/autograd/custom_function.h>

namespace {
using namespace mx;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// SwiGLU: silu(gate) * up. Composed from silu and mul, autograd keeps gate, silu(gate) and up for the
// backward; this keeps gate and up only and recomputes silu(gate) (one cheap elementwise pass), which
// saves one [tokens, intermediate] activation per feed-forward block.
struct SwiGLU : public torch::autograd::Function<SwiGLU> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gate, const at::Tensor& up) {
    ctx->save_for_backward({gate, up});
    return at::silu(gate).mul_(up);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& gate = saved[0];
    const at::Tensor& up = saved[1];
    const at::Tensor& grad = grads[0];
    at::Tensor gradGate, gradUp;
    if (ctx->needs_input_grad(0)) gradGate = at::silu_backward(grad * up, gate);
    if (ctx->needs_input_grad(1)) gradUp = grad * at::silu(gate);
    return {gradGate, gradUp};
  }
};

// swiglu(gate, up): shapes must be equal (no broadcasting: the backward assumes it).
MX_FN(swiglu) {
  const at::Tensor& gate = Get(info[0]);
  const at::Tensor& up = Get(info[1]);
  if (gate.sizes() != up.sizes()) throw ArgError("swiglu: gate and up must have the same shape");
  if (gate.scalar_type() != up.scalar_type()) throw ArgError("swiglu: gate and up must have the same dtype");
  return Put(info.Env(), SwiGLU::apply(gate, up));
}

// Summed cross-entropy Σᵢ −log softmax(logitsᵢ)[tᵢ] of logits [N, C] against targets [N] (all in [0, C)),
// computed in float32 (float64 logits stay float64). Composed from log_softmax and nll_loss, the backward zero-fills a [N, C] gradient,
// scatters into it and runs log_softmax's backward over it (a reduction and two more passes); the gradient
// of this sum is simply g·(softmax − onehot), one exp and one scale over the saved log-probabilities.
struct SumCrossEntropy : public torch::autograd::Function<SumCrossEntropy> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& target) {
    const auto wide = logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    at::Tensor logProbs = at::_log_softmax(logits.to(wide), 1, false);  // [N, C] float32 (or float64)
    at::Tensor picked = logProbs.gather(1, target.unsqueeze(1));              // [N, 1]
    ctx->save_for_backward({logProbs, target});
    ctx->saved_data["dtype"] = static_cast<int64_t>(logits.scalar_type());
    return picked.sum().neg();
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& logProbs = saved[0];
    const at::Tensor& target = saved[1];
    const at::Tensor g = grads[0].to(logProbs.scalar_type());  // [] the upstream gradient of the sum
    at::Tensor grad = at::exp(logProbs).mul_(g);     // [N, C] g·softmax
    grad.scatter_add_(1, target.unsqueeze(1), g.neg().reshape({1, 1}).expand({target.size(0), 1}));  // − g·onehot
    const auto dtype = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
    return {grad.to(dtype), at::Tensor()};
  }
};

// sumCrossEntropy(logits [N, C] floating, target [N] int64 with every id in [0, C)) -> [] float32 (float64).
MX_FN(sumCrossEntropy) {
  const at::Tensor& logits = Get(info[0]);
  const at::Tensor& target = Get(info[1]);
  if (logits.dim() != 2 || target.dim() != 1 || target.size(0) != logits.size(0))
    throw ArgError("sumCrossEntropy: need logits [N, C] and target [N]");
  if (!at::isFloatingType(logits.scalar_type())) throw ArgError("sumCrossEntropy: logits must be floating point");
  if (target.scalar_type() != at::kLong) throw ArgError("sumCrossEntropy: target must be int64");
  if (target.numel() > 0) {
    const auto range = at::aminmax(target);
    if (std::get<0>(range).item<int64_t>() < 0 || std::get<1>(range).item<int64_t>() >= logits.size(1))
      throw ArgError("sumCrossEntropy: a target is outside [0, " + std::to_string(logits.size(1)) + ")");
  }
  return Put(info.Env(), SumCrossEntropy::apply(logits, target));
}

}  // namespace

namespace mx {
void RegisterFused(Napi::Env env, Napi::Object exports) {
  MX_EXPORT(exports, swiglu);
  MX_EXPORT(exports, sumCrossEntropy);
}
}  // namespace mx

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

}  // namespace

namespace mx {
void RegisterFused(Napi::Env env, Napi::Object exports) {
  MX_EXPORT(exports, swiglu);
}
}  // namespace mx

// Semantics: quantize(W, NF4 | int8) -> [codes, scales]; dequantize(codes, scales) ≈ W (NF4: 4-bit
// normal-float codes, one absmax per 64 values; int8: one absmax per row); quantLinear(x, ..) = x dequantize(..)ᵀ.
//
// Quantised frozen weights (QLoRA-style; docs/design.md §13). NF4 as QLoRA (Dettmers et al. 2023,
// "QLoRA: Efficient Finetuning of Quantized LLMs", §3 and appendix E) and bitsandbytes' blockwise 4-bit
// kernels store it; int8 with one absmax scale per output row. Everything is written with ATen tensor
// ops, so the same code runs on CPU and CUDA; on the CPU, plain loops compute the same values in one pass
// over memory (the tensor-op version makes several, which dominates a quantised forward on a CPU).
#include "common.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace {
using namespace mx;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kInt8 = 0;
constexpr int64_t kNf4 = 1;
// QLoRA's and bitsandbytes' default block: 64 consecutive values of the row-major flattened weight.
constexpr int64_t kNf4Block = 64;
// Blocks quantised at once: bounds the float64 temporary of one large projection to 32 MiB.
constexpr int64_t kBlocksPerChunk = 1 << 16;

// The 16 NF4 levels as bitsandbytes stores them (float32; functional.py, get_4bit_type("nf4")).
constexpr float kNf4Levels[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
    -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
    0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
    0.7229568362236023f, 1.0f};

// The 15 midpoints between neighbouring levels, exact in float64 (a float32 sum is exact there).
at::Tensor Nf4Midpoints(const at::Device& device) {
  std::vector<double> mids;
  for (int i = 0; i + 1 < 16; i++) mids.push_back((static_cast<double>(kNf4Levels[i]) + kNf4Levels[i + 1]) / 2);
  return at::tensor(mids, at::TensorOptions().dtype(at::kDouble)).to(device);
}

// Each byte's two levels: [256, 2], first value in the high nibble (bitsandbytes' packing).
at::Tensor Nf4ByteTable(const at::Device& device) {
  std::vector<float> table;
  for (int b = 0; b < 256; b++) {
    table.push_back(kNf4Levels[b >> 4]);
    table.push_back(kNf4Levels[b & 15]);
  }
  return at::tensor(table, at::TensorOptions().dtype(at::kFloat)).to(device).view({256, 2});
}

int64_t Numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw ArgError("quantised weight: negative dimension");
    n *= d;
  }
  return n;
}

// ---- CPU loops: the same rules as the tensor-op versions below, value for value ----------------------

// The number of midpoints strictly below x: the code of the nearest level, a tie going to the lower one.
inline uint8_t Nf4Code(double x, const double* mids) {
  uint8_t c = 0;
  for (int k = 0; k < 15; k++) c += x > mids[k];
  return c;
}

std::vector<at::Tensor> QuantizeNf4Loops(const at::Tensor& w) {
  const at::Tensor flat = w.detach().reshape({-1}).to(at::kFloat).contiguous();  // [n]
  const int64_t n = flat.numel();
  const int64_t blocks = (n + kNf4Block - 1) / kNf4Block;
  const int64_t bytes = (n + 1) / 2;
  at::Tensor absmax = at::empty({blocks}, flat.options());                 // [blocks] float32
  at::Tensor packed = at::empty({bytes}, flat.options().dtype(at::kByte));  // [ceil(n/2)]
  double mids[15];
  for (int i = 0; i < 15; i++) mids[i] = (static_cast<double>(kNf4Levels[i]) + kNf4Levels[i + 1]) / 2;
  const uint8_t padCode = Nf4Code(0.0, mids);  // a padded value is 0
  const float* src = flat.data_ptr<float>();
  float* am = absmax.data_ptr<float>();
  uint8_t* dst = packed.data_ptr<uint8_t>();
  at::parallel_for(0, blocks, 64, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; b++) {
      const int64_t lo = b * kNf4Block;
      const int64_t hi = std::min(n, lo + kNf4Block);
      float m = 0;
      for (int64_t i = lo; i < hi; i++) m = std::max(m, std::fabs(src[i]));
      am[b] = m;
      const float divisor = m == 0 ? 1.0f : m;
      uint8_t codes[kNf4Block];
      for (int64_t i = 0; i < kNf4Block; i++)
        codes[i] = lo + i < hi ? Nf4Code(static_cast<double>(src[lo + i] / divisor), mids) : padCode;
      const int64_t p1 = std::min(bytes, (lo + kNf4Block) / 2);
      for (int64_t p = lo / 2; p < p1; p++)
        dst[p] = static_cast<uint8_t>((codes[2 * p - lo] << 4) | codes[2 * p + 1 - lo]);
    }
  });
  return {packed, absmax};
}

at::Tensor DequantizeNf4Loops(const at::Tensor& packed, const at::Tensor& absmax, int64_t n, at::ScalarType dtype) {
  const at::Tensor codes = packed.contiguous();
  const at::Tensor scales = absmax.contiguous();
  at::Tensor out = at::empty({n}, codes.options().dtype(dtype));  // [n]
  const uint8_t* src = codes.data_ptr<uint8_t>();
  const float* am = scales.data_ptr<float>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::BFloat16, at::ScalarType::Half, dtype, "dequantize_nf4", [&] {
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, codes.numel(), 1 << 14, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; p++) {
        const int64_t i = 2 * p;
        const float a = am[i / kNf4Block];  // i and i + 1 share a block (64 is even)
        o[i] = static_cast<scalar_t>(kNf4Levels[src[p] >> 4] * a);
        if (i + 1 < n) o[i + 1] = static_cast<scalar_t>(kNf4Levels[src[p] & 15] * a);
      }
    });
  });
  return out;
}

std::vector<at::Tensor> QuantizeInt8Loops(const at::Tensor& w) {
  const at::Tensor f = w.detach().to(at::kFloat).contiguous();  // [out, in]
  const int64_t rows = f.size(0);
  const int64_t cols = f.size(1);
  at::Tensor q = at::empty({rows, cols}, f.options().dtype(at::kChar));  // [out, in]
  at::Tensor scale = at::empty({rows}, f.options());                      // [out]
  const float* src = f.data_ptr<float>();
  int8_t* dst = q.data_ptr<int8_t>();
  float* sc = scale.data_ptr<float>();
  at::parallel_for(0, rows, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float* row = src + r * cols;
      float m = 0;
      for (int64_t j = 0; j < cols; j++) m = std::max(m, std::fabs(row[j]));
      sc[r] = m / 127.0f;
      const float divisor = sc[r] == 0 ? 1.0f : sc[r];
      // std::nearbyint in the default rounding mode rounds half to even, as torch.round does.
      for (int64_t j = 0; j < cols; j++)
        dst[r * cols + j] =
            static_cast<int8_t>(std::min(127.0f, std::max(-127.0f, std::nearbyint(row[j] / divisor))));
    }
  });
  return {q, scale};
}

at::Tensor DequantizeInt8Loops(const at::Tensor& q, const at::Tensor& scale, at::ScalarType dtype) {
  const at::Tensor codes = q.contiguous();
  const at::Tensor scales = scale.contiguous();
  const int64_t cols = codes.size(1);
  at::Tensor out = at::empty(codes.sizes(), codes.options().dtype(dtype));  // [out, in]
  const int8_t* src = codes.data_ptr<int8_t>();
  const float* sc = scales.data_ptr<float>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::BFloat16, at::ScalarType::Half, dtype, "dequantize_int8", [&] {
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, codes.size(0), 1, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; r++)
        for (int64_t j = 0; j < cols; j++)
          o[r * cols + j] = static_cast<scalar_t>(static_cast<float>(src[r * cols + j]) * sc[r]);
    });
  });
  return out;
}

// ---- tensor ops (every device) -------------------------------------------------------------------

// NF4: per block of 64, absmax (float32); each value's code is its nearest level of w / absmax, an exact
// tie going to the lower level (= the number of midpoints strictly below the value: bucketize with
// right=false). A zero block divides by 1 (all its values are 0, code 7). The last block is padded with
// zeros, as bitsandbytes' kernel pads a partial block, so an odd count's last low nibble is code 7.
// Returns {packed uint8 [ceil(n/2)], absmax float32 [ceil(n/64)]}.
std::vector<at::Tensor> QuantizeNf4(const at::Tensor& w) {
  at::Tensor flat = w.detach().reshape({-1}).to(at::kFloat);  // [n]
  const int64_t n = flat.numel();
  const int64_t blocks = (n + kNf4Block - 1) / kNf4Block;
  if (blocks * kNf4Block != n) flat = at::constant_pad_nd(flat, {0, blocks * kNf4Block - n}, 0);
  at::Tensor b = flat.view({blocks, kNf4Block});  // [blocks, 64]
  at::Tensor absmax = b.abs().amax({1});          // [blocks] float32
  at::Tensor mids = Nf4Midpoints(w.device());     // [15] float64
  at::Tensor codes = at::empty({blocks, kNf4Block}, w.options().dtype(at::kByte));  // [blocks, 64]
  for (int64_t s = 0; s < blocks; s += kBlocksPerChunk) {
    const int64_t len = std::min(kBlocksPerChunk, blocks - s);
    at::Tensor am = absmax.narrow(0, s, len);
    at::Tensor denom = at::where(am == 0, at::ones_like(am), am).unsqueeze(1);  // [len, 1]
    at::Tensor x = b.narrow(0, s, len).div(denom).to(at::kDouble);              // [len, 64] w / absmax
    codes.narrow(0, s, len).copy_(at::bucketize(x, mids, /*out_int32=*/true, /*right=*/false));
  }
  at::Tensor pairs = codes.view({-1}).narrow(0, 0, 2 * ((n + 1) / 2)).view({-1, 2});  // [ceil(n/2), 2]
  at::Tensor packed = pairs.select(1, 0).mul(16).add(pairs.select(1, 1));            // [ceil(n/2)] uint8
  return {packed.contiguous(), absmax.contiguous()};
}

// level × absmax in float32, then the compute dtype: [shape].
at::Tensor DequantizeNf4(const at::Tensor& packed, const at::Tensor& absmax, const std::vector<int64_t>& shape,
                         at::ScalarType dtype, bool loops) {
  const int64_t n = Numel(shape);
  const int64_t blocks = (n + kNf4Block - 1) / kNf4Block;
  if (packed.scalar_type() != at::kByte || packed.dim() != 1 || packed.numel() != (n + 1) / 2)
    throw ArgError("nf4: packed codes must be uint8 [ceil(numel / 2)]");
  if (absmax.scalar_type() != at::kFloat || absmax.dim() != 1 || absmax.numel() != blocks)
    throw ArgError("nf4: absmax must be float32 [ceil(numel / 64)]");
  if (packed.device() != absmax.device()) throw ArgError("nf4: codes and absmax must be on one device");
  if (loops) return DequantizeNf4Loops(packed, absmax, n, dtype).view(shape);
  at::Tensor values = Nf4ByteTable(packed.device()).index_select(0, packed.to(at::kInt)).view({-1});  // [2·bytes]
  if (values.numel() != blocks * kNf4Block)
    values = at::constant_pad_nd(values, {0, blocks * kNf4Block - values.numel()}, 0);
  at::Tensor w = values.view({blocks, kNf4Block}).mul(absmax.unsqueeze(1));  // [blocks, 64]
  return w.view({-1}).narrow(0, 0, n).view(shape).to(dtype);
}

// int8: per output row, scale = absmax / 127 (float32), q = round(w / scale) (half to even, as torch.round)
// clamped to [-127, 127]; a zero row divides by 1. Returns {q int8 [out, in], scale float32 [out]}.
std::vector<at::Tensor> QuantizeInt8(const at::Tensor& w) {
  if (w.dim() != 2) throw ArgError("int8: the weight must be 2-D [out, in]");
  at::Tensor f = w.detach().to(at::kFloat);                                      // [out, in]
  at::Tensor scale = f.abs().amax({1}).div(127);                                 // [out]
  at::Tensor denom = at::where(scale == 0, at::ones_like(scale), scale).unsqueeze(1);  // [out, 1]
  at::Tensor q = at::round(f.div(denom)).clamp(-127, 127).to(at::kChar);       // [out, in]
  return {q, scale.contiguous()};
}

at::Tensor DequantizeInt8(const at::Tensor& q, const at::Tensor& scale, const std::vector<int64_t>& shape,
                          at::ScalarType dtype, bool loops) {
  if (shape.size() != 2) throw ArgError("int8: the shape must be [out, in]");
  if (q.scalar_type() != at::kChar || q.sizes() != at::IntArrayRef(shape))
    throw ArgError("int8: codes must be int8 [out, in]");
  if (scale.scalar_type() != at::kFloat || scale.dim() != 1 || scale.size(0) != shape[0])
    throw ArgError("int8: scales must be float32 [out]");
  if (q.device() != scale.device()) throw ArgError("int8: codes and scales must be on one device");
  if (loops) return DequantizeInt8Loops(q, scale, dtype);
  return q.to(at::kFloat).mul(scale.unsqueeze(1)).to(dtype);  // [out, in]
}

// `portable`: the tensor-op version on the CPU too (tests compare both with the reference).
at::Tensor Dequantize(int64_t format, const at::Tensor& data, const at::Tensor& scales,
                      const std::vector<int64_t>& shape, at::ScalarType dtype, bool portable = false) {
  at::NoGradGuard noGrad;
  const bool loops = !portable && data.device().is_cpu();
  if (format == kInt8) return DequantizeInt8(data, scales, shape, dtype, loops);
  if (format == kNf4) return DequantizeNf4(data, scales, shape, dtype, loops);
  throw ArgError("quantised weight: unknown format code");
}

// y = x Wᵀ with W dequantised from (data, scales). Autograd would keep the dequantised W for the input
// gradient until the backward, i.e. the whole base in full precision across a training forward; this keeps
// only the quantised tensors and dequantises again in the backward (dx = dy W), freeing W each time.
// W is frozen: no gradient for it.
struct QuantLinear : public torch::autograd::Function<QuantLinear> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& data,
                            const at::Tensor& scales, int64_t format, int64_t out, int64_t in) {
    ctx->save_for_backward({data, scales});
    ctx->saved_data["format"] = format;
    ctx->saved_data["out"] = out;
    ctx->saved_data["in"] = in;
    // Grad mode is off in here: when x will be differentiated, the product takes the kernel its dense twin
    // takes in training, not the small-row one.
    const at::Tensor w = Dequantize(format, data, scales, {out, in}, x.scalar_type());  // [out, in]
    return Linear(x, w, c10::nullopt, !x.requires_grad());  // [.., out]
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& grad = grads[0];  // [.., out]
    at::Tensor gradX;
    if (ctx->needs_input_grad(0) && grad.defined()) {
      const std::vector<int64_t> shape = {ctx->saved_data["out"].toInt(), ctx->saved_data["in"].toInt()};
      gradX = grad.matmul(Dequantize(ctx->saved_data["format"].toInt(), saved[0], saved[1], shape,
                                     grad.scalar_type()));  // [.., in]
    }
    return {gradX, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

int64_t Format(const Napi::Value& v) {
  const int64_t f = Int(v);
  if (f != kInt8 && f != kNf4) throw ArgError("quantised weight: format must be 0 (int8) or 1 (nf4)");
  return f;
}

std::vector<int64_t> Shape2(const Napi::Value& v) {
  auto shape = IntList(v);
  if (shape.size() != 2 || shape[0] < 0 || shape[1] < 0) throw ArgError("quantised weight: shape must be [out, in]");
  return shape;
}

// quantize(w, format, portable) -> [data, scales]
MX_FN(quantize) {
  const at::Tensor& w = Get(info[0]);
  const int64_t format = Format(info[1]);
  const bool loops = !Bool(info[2]) && w.device().is_cpu();
  if (!at::isFloatingType(w.scalar_type())) throw ArgError("quantize: the weight must be floating point");
  if (format == kInt8 && w.dim() != 2) throw ArgError("int8: the weight must be 2-D [out, in]");
  at::NoGradGuard noGrad;
  if (format == kInt8) return PutList(info.Env(), loops ? QuantizeInt8Loops(w) : QuantizeInt8(w));
  return PutList(info.Env(), loops ? QuantizeNf4Loops(w) : QuantizeNf4(w));
}

// dequantize(data, scales, format, [out, in], dtype, portable) -> W [out, in]
MX_FN(dequantize) {
  const int64_t format = Format(info[2]);
  return Put(info.Env(),
             Dequantize(format, Get(info[0]), Get(info[1]), Shape2(info[3]), DType(info[4]), Bool(info[5])));
}

// quantLinear(x, data, scales, format, [out, in]) -> x Wᵀ [.., out], W dequantised in x's dtype
MX_FN(quantLinear) {
  const at::Tensor& x = Get(info[0]);
  const int64_t format = Format(info[3]);
  const auto shape = Shape2(info[4]);
  if (!at::isFloatingType(x.scalar_type())) throw ArgError("quantLinear: x must be floating point");
  if (x.dim() < 1 || x.size(-1) != shape[1]) throw ArgError("quantLinear: x's last dimension must be the weight's in");
  return Put(info.Env(), QuantLinear::apply(x, Get(info[1]), Get(info[2]), format, shape[0], shape[1]));
}

}  // namespace

namespace mx {
void RegisterQuant(Napi::Env env, Napi::Object exports) {
  MX_EXPORT(exports, quantize);
  MX_EXPORT(exports, dequantize);
  MX_EXPORT(exports, quantLinear);
}
}  // namespace mx

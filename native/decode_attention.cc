// softmax(q kᵀ / √D + mask) v for one query per row and head (a decode step), float32 on the CPU outside
// autograd. ATen's fused CPU kernel is built for blocks of queries: on one query per head it costs
// 100-350 µs per layer at 8 rows of ~100 positions, several times the time to read the keys and values.
// Here each (row, head) is one task: its scores through small_gemm.cc's dot-product kernel (the keys of a
// row and head are S contiguous rows of D floats), the softmax, then the values weighted and summed. Each
// (row, head) is computed alone, the same way whatever the rows beside it, as the small-row products are.
#include "common.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace mx {
namespace {

// out[d] = Σ_s p[s] · v[s·ldv + d] for d < D, in vectors of W floats (s in order: a fixed sum order).
template <typename V, int W>
__attribute__((always_inline)) inline void WeightedRowSum(const float* p, const float* v, int64_t S, int64_t D,
                                                          int64_t ldv, float* out) {
  int64_t d = 0;
  for (; d + 4 * W <= D; d += 4 * W) {
    V a0{}, a1{}, a2{}, a3{};
    for (int64_t s = 0; s < S; s++) {
      const float* row = v + s * ldv + d;
      V x0, x1, x2, x3;
      std::memcpy(&x0, row, sizeof(V));
      std::memcpy(&x1, row + W, sizeof(V));
      std::memcpy(&x2, row + 2 * W, sizeof(V));
      std::memcpy(&x3, row + 3 * W, sizeof(V));
      a0 += x0 * p[s];
      a1 += x1 * p[s];
      a2 += x2 * p[s];
      a3 += x3 * p[s];
    }
    std::memcpy(out + d, &a0, sizeof(V));
    std::memcpy(out + d + W, &a1, sizeof(V));
    std::memcpy(out + d + 2 * W, &a2, sizeof(V));
    std::memcpy(out + d + 3 * W, &a3, sizeof(V));
  }
  for (; d < D; d++) {
    float a = 0;
    for (int64_t s = 0; s < S; s++) a += p[s] * v[s * ldv + d];
    out[d] = a;
  }
}

typedef float Floats16 __attribute__((vector_size(64)));
typedef float Floats8 __attribute__((vector_size(32)));
__attribute__((target("avx512f"))) void WeightedRowSumAvx512(const float* p, const float* v, int64_t S, int64_t D,
                                                            int64_t ldv, float* out) {
  WeightedRowSum<Floats16, 16>(p, v, S, D, ldv, out);
}
__attribute__((target("avx2,fma"))) void WeightedRowSumAvx2(const float* p, const float* v, int64_t S, int64_t D,
                                                           int64_t ldv, float* out) {
  WeightedRowSum<Floats8, 8>(p, v, S, D, ldv, out);
}

bool Avx512() {
  static const bool yes = std::strcmp(SmallLinearIsa(), "avx512") == 0;
  return yes;
}
}  // namespace

bool DecodeAttentionApplies(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const std::optional<at::Tensor>& mask, double dropout, bool causal) {
  if (std::strcmp(SmallLinearIsa(), "off") == 0 || causal || dropout != 0) return false;
  for (const at::Tensor* t : {&q, &k, &v})
    if (!t->device().is_cpu() || t->scalar_type() != at::kFloat || t->dim() != 4 || t->requires_grad() ||
        t->stride(3) != 1)
      return false;
  const int64_t B = q.size(0), H = q.size(1), D = q.size(3), Hkv = k.size(1), S = k.size(2);
  if (q.size(2) != 1 || S < 1 || k.size(0) != B || v.size(0) != B || v.size(1) != Hkv || v.size(2) != S ||
      k.size(3) != D || v.size(3) != D || Hkv < 1 || H % Hkv != 0)
    return false;
  // A row and head's keys are S rows of D floats one after another (the kernel's weight layout).
  if (S > 1 && k.stride(2) != D) return false;
  if (mask) {
    if (mask->scalar_type() != at::kBool || mask->dim() != 4 || !mask->device().is_cpu()) return false;
    const int64_t want[4] = {B, H, 1, S};
    for (int i = 0; i < 4; i++)
      if (mask->size(i) != want[i] && mask->size(i) != 1) return false;
  }
  return true;
}

// q [B, H, 1, D], k and v [B, Hkv, S, D] (H a multiple of Hkv: grouped-query heads share a key and value
// head), mask bool broadcastable to [B, H, 1, S] (true = attend) -> [B, H, 1, D]. A row whose keys are all
// masked gets zeros, as from ATen's fused CPU kernel.
at::Tensor DecodeAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const std::optional<at::Tensor>& mask) {
  const int64_t B = q.size(0), H = q.size(1), D = q.size(3), Hkv = k.size(1), S = k.size(2);
  const int64_t group = H / Hkv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  at::Tensor out = at::empty({B, H, 1, D}, q.options());  // [B, H, 1, D]
  const at::Tensor m = mask ? mask->expand({B, H, 1, S}) : at::Tensor();  // [B, H, 1, S], strides 0 where broadcast
  const bool* mp = mask ? m.data_ptr<bool>() : nullptr;
  const float* qp = q.data_ptr<float>();
  const float* kp = k.data_ptr<float>();
  const float* vp = v.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, B * H, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> p(S);
    for (int64_t t = t0; t < t1; t++) {
      const int64_t b = t / H, h = t % H, g = h / group;
      const float* qr = qp + b * q.stride(0) + h * q.stride(1);                 // [D]
      const float* kr = kp + b * k.stride(0) + g * k.stride(1);                 // [S, D]
      const float* vr = vp + b * v.stride(0) + g * v.stride(1);                 // [S, D], rows v.stride(2) apart
      SmallDotRange(qr, 1, kr, nullptr, p.data(), D, S, 0, S);                   // [S] q · k_s
      float top = -std::numeric_limits<float>::infinity();
      for (int64_t s = 0; s < S; s++) {
        const bool keep = !mp || mp[b * m.stride(0) + h * m.stride(1) + s * m.stride(3)];
        p[s] = keep ? p[s] * scale : -std::numeric_limits<float>::infinity();
        top = std::max(top, p[s]);
      }
      float sum = 0;
      for (int64_t s = 0; s < S; s++) {
        p[s] = p[s] == -std::numeric_limits<float>::infinity() ? 0.0f : std::exp(p[s] - top);
        sum += p[s];
      }
      const float inv = sum > 0 ? 1.0f / sum : 0.0f;  // no key: every weight 0
      for (int64_t s = 0; s < S; s++) p[s] *= inv;
      float* orow = op + (b * H + h) * D;
      if (Avx512())
        WeightedRowSumAvx512(p.data(), vr, S, D, v.stride(2), orow);
      else
        WeightedRowSumAvx2(p.data(), vr, S, D, v.stride(2), orow);
    }
  });
  return out;
}
}  // namespace mx

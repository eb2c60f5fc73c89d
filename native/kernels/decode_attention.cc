// Semantics: DecodeAttention(q [B, H, 1, D], k, v [B, Hkv, S, D], mask?) and PagedDecodeAttention (keys and
// values read through block tables) = softmax(q kᵀ · scale, masked) v [B, H, 1, D], outside autograd.
//
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

// out[d] = Σ_s p[s] · v[s·ldv + d] for d < D (with `add`, out[d] + that), in vectors of W floats (s in
// order: a fixed sum order).
template <typename V, int W>
__attribute__((always_inline)) inline void WeightedRowSum(const float* p, const float* v, int64_t S, int64_t D,
                                                          int64_t ldv, float* out, bool add) {
  int64_t d = 0;
  for (; d + 4 * W <= D; d += 4 * W) {
    V a0{}, a1{}, a2{}, a3{};
    if (add) {
      std::memcpy(&a0, out + d, sizeof(V));
      std::memcpy(&a1, out + d + W, sizeof(V));
      std::memcpy(&a2, out + d + 2 * W, sizeof(V));
      std::memcpy(&a3, out + d + 3 * W, sizeof(V));
    }
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
    float a = add ? out[d] : 0;
    for (int64_t s = 0; s < S; s++) a += p[s] * v[s * ldv + d];
    out[d] = a;
  }
}

typedef float Floats16 __attribute__((vector_size(64)));
typedef float Floats8 __attribute__((vector_size(32)));
__attribute__((target("avx512f"))) void WeightedRowSumAvx512(const float* p, const float* v, int64_t S, int64_t D,
                                                            int64_t ldv, float* out, bool add) {
  WeightedRowSum<Floats16, 16>(p, v, S, D, ldv, out, add);
}
__attribute__((target("avx2,fma"))) void WeightedRowSumAvx2(const float* p, const float* v, int64_t S, int64_t D,
                                                           int64_t ldv, float* out, bool add) {
  WeightedRowSum<Floats8, 8>(p, v, S, D, ldv, out, add);
}

void WeightedRows(const float* p, const float* v, int64_t S, int64_t D, int64_t ldv, float* out, bool add);

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
      WeightedRows(p.data(), vr, S, D, v.stride(2), orow, false);
    }
  });
  return out;
}

namespace {
void WeightedRows(const float* p, const float* v, int64_t S, int64_t D, int64_t ldv, float* out, bool add) {
  if (Avx512())
    WeightedRowSumAvx512(p, v, S, D, ldv, out, add);
  else
    WeightedRowSumAvx2(p, v, S, D, ldv, out, add);
}
}  // namespace

// Paged KV (src/serve/block-pool.ts): a sequence's keys and values live in fixed-size blocks of a pool,
// kPool/vPool [N, Hkv, bs, D] (a block's keys of one head are bs contiguous rows of D floats), listed in
// order by its row of `tables` [B, M]. q [B, H, 1, D]; lens [B]: each row's keys, the new one included
// (already written); window > 0: only the last `window` keys (a sliding-window layer); scores are q·k · scale. Each (row, head) is
// one task, read from the blocks in place: scores block by block, the softmax over all of them, the values
// summed block by block, in position order (the same float operations whatever the blocks' places).
at::Tensor PagedDecodeAttention(const at::Tensor& q, const at::Tensor& kPool, const at::Tensor& vPool,
                                const at::Tensor& tables, const at::Tensor& lens, int64_t window,
                                double scale) {
  if (std::strcmp(SmallLinearIsa(), "off") == 0) throw std::invalid_argument("pagedAttention: the small-row kernel is off");
  for (const at::Tensor* t : {&q, &kPool, &vPool})
    if (!t->device().is_cpu() || t->scalar_type() != at::kFloat || !t->is_contiguous())
      throw std::invalid_argument("pagedAttention: q and the pools must be contiguous float32 CPU tensors");
  if (q.dim() != 4 || q.size(2) != 1 || kPool.dim() != 4 || !kPool.sizes().equals(vPool.sizes()) ||
      kPool.size(3) != q.size(3))
    throw std::invalid_argument("pagedAttention: q [B, H, 1, D] and pools [N, Hkv, bs, D] expected");
  const int64_t B = q.size(0), H = q.size(1), D = q.size(3);
  const int64_t N = kPool.size(0), Hkv = kPool.size(1), bs = kPool.size(2);
  if (Hkv < 1 || H % Hkv != 0) throw std::invalid_argument("pagedAttention: heads must be a multiple of kv heads");
  if (tables.dim() != 2 || tables.size(0) != B || tables.scalar_type() != at::kLong || !tables.is_contiguous() ||
      lens.dim() != 1 || lens.size(0) != B || lens.scalar_type() != at::kLong || !lens.is_contiguous())
    throw std::invalid_argument("pagedAttention: tables int64 [B, M] and lens int64 [B] expected");
  const int64_t M = tables.size(1);
  const int64_t* tp = tables.data_ptr<int64_t>();
  const int64_t* lp = lens.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; b++) {
    if (lp[b] < 1 || lp[b] > M * bs) throw std::invalid_argument("pagedAttention: a row's length exceeds its blocks");
    for (int64_t i = 0; i < (lp[b] + bs - 1) / bs; i++)
      if (tp[b * M + i] < 0 || tp[b * M + i] >= N) throw std::invalid_argument("pagedAttention: block id out of range");
  }
  const int64_t group = H / Hkv;
  const float qkScale = static_cast<float>(scale);
  at::Tensor out = at::empty({B, H, 1, D}, q.options());  // [B, H, 1, D]
  const float* qp = q.data_ptr<float>();
  const float* kp = kPool.data_ptr<float>();
  const float* vp = vPool.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t blockFloats = Hkv * bs * D;
  at::parallel_for(0, B * H, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> p;
    for (int64_t t = t0; t < t1; t++) {
      const int64_t b = t / H, h = t % H, g = h / group;
      const int64_t S = lp[b];
      const int64_t s0 = window > 0 ? std::max<int64_t>(0, S - window) : 0;
      p.assign(S - s0, 0.0f);
      const float* qr = qp + (b * H + h) * D;  // [D]
      // Scores of the keys s0..S-1, block by block.
      for (int64_t s = s0; s < S;) {
        const int64_t blk = tp[b * M + s / bs], off = s % bs, n = std::min(bs - off, S - s);
        const float* kr = kp + blk * blockFloats + g * bs * D;  // the block's [bs, D] keys of head g
        SmallDotRange(qr, 1, kr, nullptr, p.data() + (s - s0) - off, D, 0, off, off + n);
        s += n;
      }
      float top = -std::numeric_limits<float>::infinity();
      for (float& x : p) {
        x *= qkScale;
        top = std::max(top, x);
      }
      float sum = 0;
      for (float& x : p) {
        x = std::exp(x - top);
        sum += x;
      }
      const float inv = 1.0f / sum;
      for (float& x : p) x *= inv;
      float* orow = op + (b * H + h) * D;
      bool add = false;
      for (int64_t s = s0; s < S;) {
        const int64_t blk = tp[b * M + s / bs], off = s % bs, n = std::min(bs - off, S - s);
        const float* vr = vp + blk * blockFloats + g * bs * D + off * D;  // [n, D]
        WeightedRows(p.data() + (s - s0), vr, n, D, D, orow, add);
        add = true;
        s += n;
      }
    }
  });
  return out;
}
}  // namespace mx

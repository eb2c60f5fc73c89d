// Neural-network building blocks: softmax, losses, dropout, embedding, selection, attention.
#include "common.h"

#include <torch/version.h>

#include <cmath>
#include <limits>

namespace {
using namespace mx;

c10::optional<at::ScalarType> OptDType(const Napi::Value& v) {
  if (v.IsUndefined() || v.IsNull()) return c10::nullopt;
  return DType(v);
}

// softmax(id, dim, dtype|null)
MX_FN(softmax) { return Put(info.Env(), at::softmax(Get(info[0]), Int(info[1]), OptDType(info[2]))); }
MX_FN(logSoftmax) { return Put(info.Env(), at::log_softmax(Get(info[0]), Int(info[1]), OptDType(info[2]))); }

// Loss reductions by code, bound by name on the TypeScript side like the op tables of ops_math.cc.
struct ReductionCode { const char* name; int64_t value; };
const ReductionCode kReductions[] = {
    {"none", at::Reduction::None},
    {"mean", at::Reduction::Mean},
    {"sum", at::Reduction::Sum},
};
MX_FN(reductionNames) { return Names(info.Env(), kReductions); }

// crossEntropy(logits [N, C], target [N], ignoreIndex, reduction code, labelSmoothing)
MX_FN(crossEntropy) {
  int64_t reduction = Op(kReductions, info[3]).value;
  double smoothing = info[4].IsUndefined() ? 0.0 : Num(info[4]);
  return Put(info.Env(), at::cross_entropy_loss(Get(info[0]), Get(info[1]), {}, reduction, Int(info[2]), smoothing));
}

// dropout(id, p, train)
MX_FN(dropout) { return Put(info.Env(), at::dropout(Get(info[0]), Num(info[1]), Bool(info[2]))); }
// embedding(weight [V, D], ids)
MX_FN(embedding) { return Put(info.Env(), at::embedding(Get(info[0]), Get(info[1]))); }
// topk(id, k, dim, largest, sorted) -> [values, indices]
MX_FN(topk) {
  auto r = at::topk(Get(info[0]), Int(info[1]), Int(info[2]), Bool(info[3]), Bool(info[4]));
  return PutList(info.Env(), {std::get<0>(r), std::get<1>(r)});
}
// sort(id, dim, descending, stable) -> [values, indices]
MX_FN(sort) {
  auto r = at::sort(Get(info[0]), c10::optional<bool>(Bool(info[3])), Int(info[1]), Bool(info[2]));
  return PutList(info.Env(), {std::get<0>(r), std::get<1>(r)});
}
MX_FN(oneHot) { return Put(info.Env(), at::one_hot(Get(info[0]), Int(info[1]))); }
// multinomial(probs, n, replacement)
MX_FN(multinomial) { return Put(info.Env(), at::multinomial(Get(info[0]), Int(info[1]), Bool(info[2]))); }
// bincount(id, weights|null, minlength)
MX_FN(bincount) {
  auto w = GetOptional(info[1]);
  return Put(info.Env(), at::bincount(Get(info[0]), w ? c10::optional<at::Tensor>(*w) : c10::nullopt, Int(info[2])));
}

#if TORCH_VERSION_MAJOR < 2
// Attention spelled out, in slices of the batch·heads dimension: each slice's [T, S] scores are
// produced, masked and normalised while they are still in cache, instead of streaming the whole
// [B, H, T, S] tensor through memory four times (it dominates when heads are small and sequences
// long). q is scaled rather than the scores, and masks are applied in place.
at::Tensor MathAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const std::optional<at::Tensor>& mask, double p, bool causal) {
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), S = k.size(2), D = q.size(3);
  const double neg_inf = -std::numeric_limits<double>::infinity();
  at::Tensor causal_block;
  if (causal) causal_block = at::ones({T, S}, q.options().dtype(at::kBool)).tril(S - T).logical_not();  // true = masked
  at::Tensor blocked;
  if (mask) blocked = mask->scalar_type() == at::kBool ? mask->logical_not().expand({B, H, T, S}) : mask->expand({B, H, T, S});
  // Slices of about 1 MiB of scores.
  const int64_t per = std::max<int64_t>(1, (1 << 18) / std::max<int64_t>(1, T * S));
  const at::Tensor qs = q.mul(1.0 / std::sqrt(static_cast<double>(D))).reshape({B * H, T, D});
  const at::Tensor ks = k.reshape({B * H, S, D});
  const at::Tensor vs = v.reshape({B * H, S, D});
  const at::Tensor ms = blocked.defined() ? blocked.reshape({B * H, T, S}) : at::Tensor();
  std::vector<at::Tensor> outs;
  for (int64_t start = 0; start < B * H; start += per) {
    const int64_t n = std::min(per, B * H - start);
    at::Tensor scores = at::bmm(qs.narrow(0, start, n), ks.narrow(0, start, n).transpose(1, 2));  // [n, T, S]
    if (causal) scores.masked_fill_(causal_block, neg_inf);
    else if (ms.defined()) {
      if (ms.scalar_type() == at::kBool) scores.masked_fill_(ms.narrow(0, start, n), neg_inf);
      else scores.add_(ms.narrow(0, start, n));
    }
    at::Tensor attn = at::softmax(scores, -1);
    if (p > 0) attn = at::dropout(attn, p, true);
    outs.push_back(at::bmm(attn, vs.narrow(0, start, n)));                                       // [n, T, D]
  }
  return (outs.size() == 1 ? outs[0] : at::cat(outs, 0)).view({B, H, T, D});
}
#endif

// sdpa(q [B,H,T,D], k [B,H,S,D], v [B,H,S,D], mask [.., T, S] bool (true = attend) | null, dropoutP, isCausal)
// libtorch 2.x has a fused kernel; 1.13 only a private one whose mask convention changed later,
// so there we spell the math out (same result up to float rounding).
MX_FN(sdpa) {
  const at::Tensor& q = Get(info[0]);
  const at::Tensor& k = Get(info[1]);
  const at::Tensor& v = Get(info[2]);
  auto mask = GetOptional(info[3]);
  double p = Num(info[4]);
  bool causal = Bool(info[5]);
  if (causal && mask) throw ArgError("sdpa: give either a mask or isCausal, not both");
  // One query per row and head at inference (a decode step): our own kernel (decode_attention.cc).
  if (DecodeAttentionApplies(q, k, v, mask, p, causal)) return Put(info.Env(), DecodeAttention(q, k, v, mask));
#if TORCH_VERSION_MAJOR >= 2
  return Put(info.Env(), at::scaled_dot_product_attention(q, k, v, mask ? c10::optional<at::Tensor>(*mask) : c10::nullopt, p, causal));
#else
  return Put(info.Env(), MathAttention(q, k, v, mask, p, causal));
#endif
}

// pagedAttention(q [B,H,1,D], kPool [N,Hkv,bs,D], vPool, tables int64 [B,M], lens int64 [B], window, scale): a decode
// step's attention over paged KV blocks (float32 CPU, the small-row kernel on).
MX_FN(pagedAttention) {
  return Put(info.Env(), PagedDecodeAttention(Get(info[0]), Get(info[1]), Get(info[2]), Get(info[3]), Get(info[4]),
                                              Int(info[5]), Num(info[6])));
}

}  // namespace

namespace mx {
void RegisterNN(Napi::Env env, Napi::Object exports) {
  MX_EXPORT(exports, softmax);
  MX_EXPORT(exports, logSoftmax);
  MX_EXPORT(exports, reductionNames);
  MX_EXPORT(exports, crossEntropy);
  MX_EXPORT(exports, dropout);
  MX_EXPORT(exports, embedding);
  MX_EXPORT(exports, topk);
  MX_EXPORT(exports, sort);
  MX_EXPORT(exports, oneHot);
  MX_EXPORT(exports, multinomial);
  MX_EXPORT(exports, bincount);
  MX_EXPORT(exports, sdpa);
  MX_EXPORT(exports, pagedAttention);
}
}  // namespace mx

// Semantics: lowRankByMember: for each slot i of member g = members[i]: out[outRows[i]] += w_i · s_g ·
// B_g (A_g x[inRows[i]]); with a base, out[i] = (base[baseRows[i]] + delta_i) · columnScales[g] (arguments below).
//
// Low-rank products of rows that belong to different members (adapters, or MixLoRA experts), for
// inference steps that mix adapters (continuous batching in `mixlora serve`). Each slot (a token, or a
// token's routed expert) has a member; the slots of each member go through that member's A and B alone:
// out[outRow] += w · s · B (A x[inRow]). This is what Punica's and S-LoRA's batched LoRA kernels (BGMV)
// compute: every member's weights are read once, and only for its own rows, so a step over rows of four
// adapters costs four adapters' reads and each row's own products, not every member's products on every
// row. On the CPU the products run small_gemm.cc's kernel directly (whose per-row results do not depend on
// the rows beside them), with no ATen op per member; elsewhere (CUDA, or the kernel off) ATen's ops do.
#include "common.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

namespace {
using mx::ArgError;
using Modules = std::vector<std::optional<at::Tensor>>;

constexpr int64_t kChunkRows = 16;  // the vector kernel's most rows per call

// The vector kernel's path: everything on the CPU, float32, the modules contiguous.
bool KernelApplies(const at::Tensor& x, const Modules& As, const Modules& Bs) {
  if (std::strcmp(mx::SmallLinearIsa(), "off") == 0 || !x.device().is_cpu()) return false;
  for (size_t g = 0; g < As.size(); g++)
    if (As[g] && (!As[g]->device().is_cpu() || !As[g]->is_contiguous() || !Bs[g]->device().is_cpu() ||
                  !Bs[g]->is_contiguous()))
      return false;
  return true;
}

// Index i of an optional int64 [m] list (none: i itself), checked against [0, bound).
int64_t RowOf(const int64_t* rows, int64_t i, int64_t bound, const char* what) {
  const int64_t r = rows ? rows[i] : i;
  if (r < 0 || r >= bound) throw ArgError(std::string("lowRankByMember: ") + what + " index out of range");
  return r;
}

// The CPU path in three passes over chunks of at most 16 slots of one member: gather the slots' input
// rows; h = (x Aᵀ) · w · s per chunk (the rank rows of all chunks split between threads); then
// y[outRow] += h Bᵀ, the output columns split between threads, each adding its columns of every chunk in
// member and slot order (so a row's sum runs in the same order whatever the threads).
// With a base (one output row per slot), row i of y [m, out] is written once, as
// (base[baseRows[i]] + delta_i) · columnScales[members[i]]: the same float32 operations as composing
// them; without, y [outCount, out] holds zeros and the deltas are added.
struct BaseRows {
  const float* base = nullptr;         // [nb, out], or null: y holds zeros
  const int64_t* rows = nullptr;       // [m], or null: slot i reads base row i
  const float* scales = nullptr;       // [G, out], or null
  const int64_t* members = nullptr;    // [m]
};
void LowRankOnCpu(const at::Tensor& x, const std::vector<std::vector<int64_t>>& slots,
                  const std::optional<at::Tensor>& inRowsT, const std::optional<at::Tensor>& outRowsT,
                  const std::optional<at::Tensor>& weightsT, int64_t outCount, int64_t out, const Modules& As,
                  const Modules& Bs, const Napi::Array& scales, const BaseRows& base, at::Tensor& y) {
  const int64_t n = x.size(0), in = x.size(1);
  const at::Tensor inRowsC = inRowsT ? inRowsT->contiguous() : at::Tensor();
  const at::Tensor outRowsC = outRowsT ? outRowsT->contiguous() : at::Tensor();
  const at::Tensor weightsC = weightsT ? weightsT->contiguous() : at::Tensor();
  const int64_t* inRows = inRowsT ? inRowsC.data_ptr<int64_t>() : nullptr;
  const int64_t* outRows = outRowsT ? outRowsC.data_ptr<int64_t>() : nullptr;
  const float* weights = weightsT ? weightsC.data_ptr<float>() : nullptr;

  struct Chunk {
    size_t g;
    std::vector<int64_t> slots;
    int64_t xAt, hAt, tAt;  // offsets in the buffers below
    float factor[kChunkRows];
    int64_t inRow[kChunkRows], outRow[kChunkRows];
  };
  std::vector<Chunk> chunks;
  int64_t xSize = 0, hSize = 0, tSize = 0;
  for (size_t g = 0; g < slots.size(); g++) {
    const int64_t r = As[g] ? As[g]->size(0) : 0;
    const double s = As[g] ? scales.Get(static_cast<uint32_t>(g)).As<Napi::Number>().DoubleValue() : 0;
    for (size_t first = 0; first < slots[g].size(); first += kChunkRows) {
      Chunk c{g, {}, xSize, hSize, tSize, {}, {}, {}};
      for (size_t j = first; j < std::min(slots[g].size(), first + kChunkRows); j++) {
        const int64_t i = slots[g][j];
        c.factor[c.slots.size()] = static_cast<float>(s * (weights ? weights[i] : 1.0f));
        c.outRow[c.slots.size()] = RowOf(outRows, i, outCount, "outRows");
        c.inRow[c.slots.size()] = RowOf(inRows, i, n, "inRows");
        c.slots.push_back(i);
      }
      const int64_t rows = static_cast<int64_t>(c.slots.size());
      xSize += rows * in;
      hSize += rows * r;
      tSize += rows * out;
      chunks.push_back(std::move(c));
    }
  }
  float* yp = y.data_ptr<float>();
  if (base.base) {
    // Rows no chunk writes (members without modules): their base row, scaled.
    std::vector<bool> written(outCount, false);
    for (const Chunk& c : chunks)
      for (size_t j = 0; j < c.slots.size(); j++) written[c.outRow[j]] = true;
    for (int64_t i = 0; i < outCount; i++) {
      if (written[i]) continue;
      const float* b = base.base + (base.rows ? base.rows[i] : i) * out;
      const float* sc = base.scales ? base.scales + base.members[i] * out : nullptr;
      for (int64_t o = 0; o < out; o++) yp[i * out + o] = sc ? b[o] * sc[o] : b[o];
    }
  }
  if (chunks.empty()) return;
  std::vector<float> X(xSize), H(hSize), T(tSize);
  const float* xp = x.data_ptr<float>();
  for (const Chunk& c : chunks)
    for (size_t j = 0; j < c.slots.size(); j++)
      std::memcpy(&X[c.xAt + j * in], xp + c.inRow[j] * in, in * sizeof(float));

  // The A products split between threads by rank rows over all chunks (a chunk's rank rows are its
  // members' rows of A): chunk by chunk, one thread could get the r = 80 members and the other the r = 16
  // ones.
  std::vector<int64_t> rankAt(chunks.size() + 1, 0);  // chunk k's rank rows are [rankAt[k], rankAt[k + 1])
  for (size_t k = 0; k < chunks.size(); k++) rankAt[k + 1] = rankAt[k] + As[chunks[k].g]->size(0);
  const int64_t grainRows = std::max<int64_t>(1, (int64_t{32} << 10) / (in * int64_t{sizeof(float)}));
  at::parallel_for(0, rankAt.back(), grainRows, [&](int64_t p0, int64_t p1) {
    size_t k = std::upper_bound(rankAt.begin(), rankAt.end(), p0) - rankAt.begin() - 1;
    for (; k < chunks.size() && rankAt[k] < p1; k++) {
      const Chunk& c = chunks[k];
      const int64_t rows = static_cast<int64_t>(c.slots.size()), r = As[c.g]->size(0);
      const int64_t q0 = std::max(p0, rankAt[k]) - rankAt[k], q1 = std::min(p1, rankAt[k + 1]) - rankAt[k];
      float* h = &H[c.hAt];
      mx::SmallDotRange(&X[c.xAt], rows, As[c.g]->data_ptr<float>(), nullptr, h, in, r, q0, q1);  // [rows, r]
      for (int64_t j = 0; j < rows; j++)
        for (int64_t q = q0; q < q1; q++) h[j * r + q] *= c.factor[j];
    }
  });
  at::parallel_for(0, out, 64, [&](int64_t o0, int64_t o1) {
    for (const Chunk& c : chunks) {
      const int64_t rows = static_cast<int64_t>(c.slots.size()), r = As[c.g]->size(0);
      float* t = &T[c.tAt];
      mx::SmallDotRange(&H[c.hAt], rows, Bs[c.g]->data_ptr<float>(), nullptr, t, r, out, o0, o1);  // [rows, out]
      for (int64_t j = 0; j < rows; j++) {
        float* yr = yp + c.outRow[j] * out;
        const float* tr = t + j * out;
        if (!base.base) {
          for (int64_t o = o0; o < o1; o++) yr[o] += tr[o];
          continue;
        }
        const float* b = base.base + (base.rows ? base.rows[c.slots[j]] : c.slots[j]) * out;
        const float* sc = base.scales ? base.scales + c.g * out : nullptr;
        for (int64_t o = o0; o < o1; o++) yr[o] = sc ? (b[o] + tr[o]) * sc[o] : b[o] + tr[o];
      }
    }
  });
}

// lowRankByMember(x, members, inRows|null, outRows|null, weights|null, outCount, A[], B[], scales[],
//                 base|null, baseRows|null, columnScales|null)
//   x [n, in] float32; members [m] int64, slot i's member (a member without modules, or past the lists,
//   adds nothing); inRows [m] int64, the row of x slot i reads (null: row i); outRows [m] int64, the row of
//   the output it adds to (null: row i); weights [m] float32, its weight w (null: 1); A[g] [r, in] and
//   B[g] [out, r] float32 or null; scales[g] its s  ->  [outCount, out] float32.
//   With base [nb, out] float32 (outRows null: one output row per slot): output row i is
//   base[baseRows[i]] (null: row i) + its delta, times columnScales[members[i]] when given ([G, out]
//   float32: DoRA's m / ‖W + sBA‖ per member): a projection's frozen output adapted in the same call, with
//   the same float32 operations as (base + delta) · scale composed (each one rounding).
MX_FN(lowRankByMember) {
  const at::Tensor& x = mx::Get(info[0]);
  const at::Tensor& members = mx::Get(info[1]);
  const auto inRows = mx::GetOptional(info[2]);
  const auto outRows = mx::GetOptional(info[3]);
  const auto weights = mx::GetOptional(info[4]);
  const int64_t outCount = mx::Int(info[5]);
  const auto A = info[6].As<Napi::Array>();
  const auto B = info[7].As<Napi::Array>();
  const auto scales = info[8].As<Napi::Array>();
  const auto base = mx::GetOptional(info[9]);
  const auto baseRows = mx::GetOptional(info[10]);
  const auto columnScales = mx::GetOptional(info[11]);
  if (x.dim() != 2 || x.scalar_type() != at::kFloat) throw ArgError("lowRankByMember: x must be float32 [n, in]");
  if (members.dim() != 1 || members.scalar_type() != at::kLong)
    throw ArgError("lowRankByMember: members must be int64 [m]");
  const int64_t m = members.size(0);
  for (const auto* t : {inRows ? &*inRows : nullptr, outRows ? &*outRows : nullptr})
    if (t && (t->dim() != 1 || t->size(0) != m || t->scalar_type() != at::kLong))
      throw ArgError("lowRankByMember: row indices must be int64 [m], one per member entry");
  if (weights && (weights->dim() != 1 || weights->size(0) != m || weights->scalar_type() != at::kFloat))
    throw ArgError("lowRankByMember: weights must be float32 [m]");
  if (!inRows && m != x.size(0)) throw ArgError("lowRankByMember: without inRows, members must have x's rows");
  if (!outRows && m != outCount) throw ArgError("lowRankByMember: without outRows, outCount must be members' length");
  const uint32_t G = A.Length();
  if (B.Length() != G || scales.Length() != G) throw ArgError("lowRankByMember: A, B and scales differ in length");

  // Each member's modules, checked, and the width of the output.
  Modules As(G), Bs(G);
  int64_t out = -1;
  for (uint32_t g = 0; g < G; g++) {
    As[g] = mx::GetOptional(A.Get(g));
    Bs[g] = mx::GetOptional(B.Get(g));
    if (As[g].has_value() != Bs[g].has_value()) throw ArgError("lowRankByMember: a member has A without B");
    if (!As[g]) continue;
    const at::Tensor &a = *As[g], &b = *Bs[g];
    if (a.dim() != 2 || b.dim() != 2 || a.size(1) != x.size(1) || b.size(1) != a.size(0) ||
        a.scalar_type() != at::kFloat || b.scalar_type() != at::kFloat)
      throw ArgError("lowRankByMember: member modules must be float32 A [r, in] and B [out, r]");
    if (out >= 0 && b.size(0) != out) throw ArgError("lowRankByMember: members' B differ in width");
    out = b.size(0);
  }
  if (out < 0) throw ArgError("lowRankByMember: no member has modules");
  if (base) {
    if (outRows) throw ArgError("lowRankByMember: base needs one output row per slot (no outRows)");
    if (base->dim() != 2 || base->size(1) != out || base->scalar_type() != at::kFloat)
      throw ArgError("lowRankByMember: base must be float32 [nb, out]");
    if (baseRows && (baseRows->dim() != 1 || baseRows->size(0) != m || baseRows->scalar_type() != at::kLong))
      throw ArgError("lowRankByMember: baseRows must be int64 [m], one per member entry");
    if (!baseRows && base->size(0) != m) throw ArgError("lowRankByMember: without baseRows, base must have a row per slot");
  } else if (baseRows || columnScales) {
    throw ArgError("lowRankByMember: baseRows and columnScales need base");
  }
  if (columnScales && (columnScales->dim() != 2 || columnScales->size(0) != G || columnScales->size(1) != out ||
                       columnScales->scalar_type() != at::kFloat))
    throw ArgError("lowRankByMember: columnScales must be float32 [G, out], a row per member");

  // The slots of each member, in slot order (so sums into a shared output row run in a fixed order).
  const at::Tensor memberList = members.to(at::kCPU).contiguous();  // [m]
  const int64_t* mp = memberList.data_ptr<int64_t>();
  std::vector<std::vector<int64_t>> slots(G);
  for (int64_t i = 0; i < m; i++) {
    if (columnScales && (mp[i] < 0 || mp[i] >= static_cast<int64_t>(G)))
      throw ArgError("lowRankByMember: with columnScales, every member must be one of the lists'");
    if (mp[i] >= 0 && mp[i] < static_cast<int64_t>(G) && As[mp[i]]) slots[mp[i]].push_back(i);
  }

  const at::Tensor baseRowList = baseRows ? baseRows->to(at::kCPU).contiguous() : at::Tensor();  // [m]
  if (baseRows) {
    const int64_t* rp = baseRowList.data_ptr<int64_t>();
    for (int64_t i = 0; i < m; i++)
      if (rp[i] < 0 || rp[i] >= base->size(0)) throw ArgError("lowRankByMember: baseRows index out of range");
  }
  at::Tensor y;
  const bool cpuBase = !base || (base->device().is_cpu() && (!columnScales || columnScales->device().is_cpu()));
  if (KernelApplies(x, As, Bs) && cpuBase) {
    const at::Tensor baseC = base ? base->contiguous() : at::Tensor();
    const at::Tensor scalesC = columnScales ? columnScales->contiguous() : at::Tensor();
    BaseRows rows;
    if (base) {
      rows = {baseC.data_ptr<float>(), baseRows ? baseRowList.data_ptr<int64_t>() : nullptr,
              columnScales ? scalesC.data_ptr<float>() : nullptr, mp};
    }
    y = base ? at::empty({m, out}, x.options()) : at::zeros({outCount, out}, x.options());  // [outCount, out]
    LowRankOnCpu(x.contiguous(), slots, inRows, outRows, weights, outCount, out, As, Bs, scales, rows, y);
  } else {
    // Elsewhere (CUDA, or no vector kernel): the same with ATen's ops, member by member.
    y = !base ? at::zeros({outCount, out}, x.options())                   // [outCount, out]
        : baseRows ? base->index_select(0, *baseRows)                     // [m, out]
                   : base->clone(at::MemoryFormat::Contiguous);
    const auto index = at::TensorOptions().dtype(at::kLong);
    for (uint32_t g = 0; g < G; g++) {
      if (slots[g].empty()) continue;
      const at::Tensor idx = at::tensor(slots[g], index).to(x.device());  // [mg]
      const at::Tensor xin = x.index_select(0, inRows ? inRows->index_select(0, idx) : idx);  // [mg, in]
      at::Tensor h = mx::Linear(xin, *As[g], c10::nullopt);  // [mg, r]
      const double s = scales.Get(g).As<Napi::Number>().DoubleValue();
      h = weights ? h.mul(weights->index_select(0, idx).mul(s).unsqueeze(1)) : h.mul(s);  // [mg, r]
      const at::Tensor d = mx::Linear(h, *Bs[g], c10::nullopt);  // [mg, out]
      y.index_add_(0, outRows ? outRows->index_select(0, idx) : idx, d);
    }
    if (columnScales) y.mul_(columnScales->index_select(0, members));  // [m, out]
  }
  return mx::Put(info.Env(), y);
}
}  // namespace

namespace mx {
void RegisterLowRank(Napi::Env env, Napi::Object exports) { MX_EXPORT(exports, lowRankByMember); }
}  // namespace mx

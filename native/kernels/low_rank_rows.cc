// Semantics: lowRankShrink: h[i, :r_g] = w_i · s_g · A_g x[inRows[i]] for each slot i of member g = members[i]
// (h [m, R] float32, zeros past r_g and in the rows of members without modules).
// Semantics: lowRankExpand: out[outRows[i]] += B_g h[i, :r_g]; with a base, out[i] = (base[baseRows[i]] +
// B_g h[i, :r_g]) · columnScales[g] (arguments below).
//
// Low-rank products of rows that belong to different members (adapters, or MixLoRA experts), for
// inference steps that mix adapters (continuous batching in `mixlora serve`). Each slot (a token, or a
// token's routed expert) has a member; the slots of each member go through that member's A and B alone,
// in two ops as Punica's and vLLM's batched LoRA kernels (BGMV; vLLM's add_shrink and add_expand): every
// member's weights are read once, and only for its own rows, so a step over rows of four adapters costs four
// adapters' reads and each row's own products, not every member's products on every row. On the CPU the
// products run small_gemm.cc's kernel directly (whose per-row results do not depend on the rows beside
// them), over chunks of at most 16 slots of one member, with no ATen op per member; elsewhere (CUDA, or the
// kernel off) ATen's ops do.
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
bool KernelApplies(const at::Tensor& x, const Modules& modules) {
  if (std::strcmp(mx::SmallLinearIsa(), "off") == 0 || !x.device().is_cpu()) return false;
  for (const auto& w : modules)
    if (w && (!w->device().is_cpu() || !w->is_contiguous())) return false;
  return true;
}

// Index i of an optional int64 [m] list (none: i itself), checked against [0, bound).
int64_t RowOf(const int64_t* rows, int64_t i, int64_t bound, const char* op, const char* what) {
  const int64_t r = rows ? rows[i] : i;
  if (r < 0 || r >= bound) throw ArgError(std::string(op) + ": " + what + " index out of range");
  return r;
}

// An optional int64 [m] list on the host (its pointer null when absent), checked.
struct RowList {
  at::Tensor held;
  const int64_t* rows = nullptr;
  RowList(const std::optional<at::Tensor>& t, int64_t m, const char* op, const char* name) {
    if (!t) return;
    if (t->dim() != 1 || t->size(0) != m || t->scalar_type() != at::kLong)
      throw ArgError(std::string(op) + ": " + name + " must be int64 [m], one per member entry");
    held = t->to(at::kCPU).contiguous();
    rows = held.data_ptr<int64_t>();
  }
};

// The members' modules from a JavaScript list (each a float32 matrix or null), and each member's slots in
// slot order (so sums into a shared output row run in a fixed order). A member past the list or without
// a module has no slots; `everyMember` refuses those instead.
struct Members {
  Modules modules;
  at::Tensor list;            // [m] int64 on the host
  const int64_t* of = nullptr;  // slot i's member
  std::vector<std::vector<int64_t>> slots;
  Members(const at::Tensor& members, const Napi::Array& given, const char* op, bool everyMember) {
    if (members.dim() != 1 || members.scalar_type() != at::kLong)
      throw ArgError(std::string(op) + ": members must be int64 [m]");
    const uint32_t G = given.Length();
    modules.resize(G);
    for (uint32_t g = 0; g < G; g++) {
      modules[g] = mx::GetOptional(given.Get(g));
      if (modules[g] && (modules[g]->dim() != 2 || modules[g]->scalar_type() != at::kFloat))
        throw ArgError(std::string(op) + ": member modules must be float32 matrices");
    }
    list = members.to(at::kCPU).contiguous();
    of = list.data_ptr<int64_t>();
    slots.resize(G);
    for (int64_t i = 0; i < members.size(0); i++) {
      const bool listed = of[i] >= 0 && of[i] < static_cast<int64_t>(G);
      if (everyMember && !listed) throw ArgError(std::string(op) + ": with columnScales, every member must be one of the lists'");
      if (listed && modules[of[i]]) slots[of[i]].push_back(i);
    }
  }
};

// A member's slots cut into chunks of at most kChunkRows.
struct Chunk {
  size_t g;
  const int64_t* slots;
  int64_t rows;
};
std::vector<Chunk> ChunksOf(const Members& ms) {
  std::vector<Chunk> chunks;
  for (size_t g = 0; g < ms.slots.size(); g++)
    for (size_t first = 0; first < ms.slots[g].size(); first += kChunkRows)
      chunks.push_back({g, ms.slots[g].data() + first,
                        static_cast<int64_t>(std::min<size_t>(kChunkRows, ms.slots[g].size() - first))});
  return chunks;
}

// lowRankShrink(x, members, inRows|null, weights|null, A[], scales[]) -> h [m, R] float32
//   x [n, in] float32; members [m] int64, slot i's member; inRows [m] int64, the row of x slot i reads
//   (null: row i); weights [m] float32, its weight w (null: 1); A[g] [r_g, in] float32 or null; scales[g]
//   its s. R is the largest r_g.
MX_FN(lowRankShrink) {
  const char* op = "lowRankShrink";
  const at::Tensor& x = mx::Get(info[0]);
  const at::Tensor& membersT = mx::Get(info[1]);
  const auto inRowsT = mx::GetOptional(info[2]);
  const auto weightsT = mx::GetOptional(info[3]);
  const auto scales = info[5].As<Napi::Array>();
  if (x.dim() != 2 || x.scalar_type() != at::kFloat) throw ArgError("lowRankShrink: x must be float32 [n, in]");
  const Members ms(membersT, info[4].As<Napi::Array>(), op, false);
  const int64_t m = membersT.size(0), n = x.size(0), in = x.size(1);
  const RowList inRows(inRowsT, m, op, "inRows");
  if (weightsT && (weightsT->dim() != 1 || weightsT->size(0) != m || weightsT->scalar_type() != at::kFloat))
    throw ArgError("lowRankShrink: weights must be float32 [m]");
  if (!inRowsT && m != n) throw ArgError("lowRankShrink: without inRows, members must have x's rows");
  if (scales.Length() != ms.modules.size()) throw ArgError("lowRankShrink: A and scales differ in length");
  int64_t R = 0;
  for (const auto& a : ms.modules) {
    if (!a) continue;
    if (a->size(1) != in) throw ArgError("lowRankShrink: member modules must be A [r, in], x [n, in]");
    R = std::max(R, a->size(0));
  }
  if (R == 0) throw ArgError("lowRankShrink: no member has modules");
  // Read here, on the JavaScript thread: the kernel's threads must not touch JavaScript values.
  std::vector<double> scaleOf(ms.modules.size());
  for (size_t g = 0; g < scaleOf.size(); g++)
    scaleOf[g] = scales.Get(static_cast<uint32_t>(g)).As<Napi::Number>().DoubleValue();
  const at::Tensor weightList = weightsT ? weightsT->to(at::kCPU).contiguous() : at::Tensor();
  const float* weights = weightsT ? weightList.data_ptr<float>() : nullptr;
  for (int64_t i = 0; i < m; i++) RowOf(inRows.rows, i, n, op, "inRows");

  at::Tensor h = at::zeros({m, R}, x.options());  // [m, R]
  if (!KernelApplies(x, ms.modules)) {
    // Elsewhere (CUDA, or no vector kernel): the same with ATen's ops, member by member.
    for (size_t g = 0; g < ms.slots.size(); g++) {
      if (ms.slots[g].empty()) continue;
      const at::Tensor idx = at::tensor(ms.slots[g], at::TensorOptions().dtype(at::kLong)).to(x.device());  // [mg]
      const at::Tensor xin = x.index_select(0, inRowsT ? inRowsT->index_select(0, idx) : idx);         // [mg, in]
      at::Tensor hg = mx::Linear(xin, *ms.modules[g], c10::nullopt);                                     // [mg, r]
      hg = weightsT ? hg.mul(weightsT->index_select(0, idx).mul(scaleOf[g]).unsqueeze(1)) : hg.mul(scaleOf[g]);
      h.narrow(1, 0, hg.size(1)).index_copy_(0, idx, hg);
    }
    return mx::Put(info.Env(), h);
  }
  // The CPU kernel: each chunk's input rows gathered, then its products split between threads by rank rows
  // over all chunks (a chunk's rank rows are its member's rows of A: chunk by chunk, one thread could get
  // the r = 80 members and the other the r = 16 ones); each result row scaled by w · s into its slot's row.
  const std::vector<Chunk> chunks = ChunksOf(ms);
  if (chunks.empty()) return mx::Put(info.Env(), h);
  const at::Tensor xc = x.contiguous();
  const float* xp = xc.data_ptr<float>();
  std::vector<int64_t> xAt(chunks.size() + 1, 0), rankAt(chunks.size() + 1, 0);
  for (size_t k = 0; k < chunks.size(); k++) {
    xAt[k + 1] = xAt[k] + chunks[k].rows * in;
    rankAt[k + 1] = rankAt[k] + ms.modules[chunks[k].g]->size(0);
  }
  std::vector<float> X(xAt.back());
  for (size_t k = 0; k < chunks.size(); k++)
    for (int64_t j = 0; j < chunks[k].rows; j++)
      std::memcpy(&X[xAt[k] + j * in], xp + RowOf(inRows.rows, chunks[k].slots[j], n, op, "inRows") * in,
                  in * sizeof(float));
  float* hp = h.data_ptr<float>();
  const int64_t grainRows = std::max<int64_t>(1, (int64_t{32} << 10) / (in * int64_t{sizeof(float)}));
  at::parallel_for(0, rankAt.back(), grainRows, [&](int64_t p0, int64_t p1) {
    std::vector<float> t(kChunkRows * R);
    size_t k = std::upper_bound(rankAt.begin(), rankAt.end(), p0) - rankAt.begin() - 1;
    for (; k < chunks.size() && rankAt[k] < p1; k++) {
      const Chunk& c = chunks[k];
      const int64_t r = ms.modules[c.g]->size(0);
      const int64_t q0 = std::max(p0, rankAt[k]) - rankAt[k], q1 = std::min(p1, rankAt[k + 1]) - rankAt[k];
      mx::SmallDotRange(&X[xAt[k]], c.rows, ms.modules[c.g]->data_ptr<float>(), nullptr, t.data(), in, r, q0, q1);
      const double s = scaleOf[c.g];
      for (int64_t j = 0; j < c.rows; j++) {
        const float factor = static_cast<float>(s * (weights ? weights[c.slots[j]] : 1.0f));
        for (int64_t q = q0; q < q1; q++) hp[c.slots[j] * R + q] = t[j * r + q] * factor;
      }
    }
  });
  return mx::Put(info.Env(), h);
}

// lowRankExpand(h, members, outRows|null, outCount, B[], base|null, baseRows|null, columnScales|null)
//   h [m, R] float32 (lowRankShrink's); members [m] int64 (a member without modules, or past the list, adds
//   nothing); outRows [m] int64, the row of the output slot i adds to (null: row i); B[g] [out, r_g] float32
//   or null, r_g <= R  ->  [outCount, out] float32.
//   With base [nb, out] float32 (outRows null: one output row per slot): output row i is base[baseRows[i]]
//   (null: row i) + its delta, times columnScales[members[i]] when given ([G, out] float32: DoRA's
//   m / ‖W + sBA‖ per member): a projection's frozen output adapted in the same call, with the same float32
//   operations as (base + delta) · scale composed (each one rounding).
MX_FN(lowRankExpand) {
  const char* op = "lowRankExpand";
  const at::Tensor& h = mx::Get(info[0]);
  const at::Tensor& membersT = mx::Get(info[1]);
  const auto outRowsT = mx::GetOptional(info[2]);
  const int64_t outCount = mx::Int(info[3]);
  const auto base = mx::GetOptional(info[5]);
  const auto baseRowsT = mx::GetOptional(info[6]);
  const auto columnScales = mx::GetOptional(info[7]);
  if (h.dim() != 2 || h.scalar_type() != at::kFloat) throw ArgError("lowRankExpand: h must be float32 [m, R]");
  const Members ms(membersT, info[4].As<Napi::Array>(), op, columnScales.has_value());
  const int64_t m = membersT.size(0), R = h.size(1);
  if (h.size(0) != m) throw ArgError("lowRankExpand: h must have a row per member entry");
  const RowList outRows(outRowsT, m, op, "outRows");
  const RowList baseRows(baseRowsT, m, op, "baseRows");
  if (!outRowsT && m != outCount) throw ArgError("lowRankExpand: without outRows, outCount must be members' length");
  const int64_t G = static_cast<int64_t>(ms.modules.size());
  int64_t out = -1;
  for (const auto& b : ms.modules) {
    if (!b) continue;
    if (b->size(1) > R) throw ArgError("lowRankExpand: a member's B [out, r] has r above h's width");
    if (out >= 0 && b->size(0) != out) throw ArgError("lowRankExpand: members' B differ in width");
    out = b->size(0);
  }
  if (out < 0) throw ArgError("lowRankExpand: no member has modules");
  if (base) {
    if (outRowsT) throw ArgError("lowRankExpand: base needs one output row per slot (no outRows)");
    if (base->dim() != 2 || base->size(1) != out || base->scalar_type() != at::kFloat)
      throw ArgError("lowRankExpand: base must be float32 [nb, out]");
    if (!baseRowsT && base->size(0) != m) throw ArgError("lowRankExpand: without baseRows, base must have a row per slot");
    for (int64_t i = 0; i < m; i++) RowOf(baseRows.rows, i, base->size(0), op, "baseRows");
  } else if (baseRowsT || columnScales) {
    throw ArgError("lowRankExpand: baseRows and columnScales need base");
  }
  if (columnScales && (columnScales->dim() != 2 || columnScales->size(0) != G || columnScales->size(1) != out ||
                       columnScales->scalar_type() != at::kFloat))
    throw ArgError("lowRankExpand: columnScales must be float32 [G, out], a row per member");
  for (int64_t i = 0; i < m; i++) RowOf(outRows.rows, i, outCount, op, "outRows");

  const bool cpuBase = !base || (base->device().is_cpu() && (!columnScales || columnScales->device().is_cpu()));
  if (!KernelApplies(h, ms.modules) || !cpuBase) {
    // Elsewhere (CUDA, or no vector kernel): the same with ATen's ops, member by member.
    at::Tensor y = !base ? at::zeros({outCount, out}, h.options())        // [outCount, out]
                   : baseRowsT ? base->index_select(0, *baseRowsT)       // [m, out]
                               : base->clone(at::MemoryFormat::Contiguous);
    for (size_t g = 0; g < ms.slots.size(); g++) {
      if (ms.slots[g].empty()) continue;
      const at::Tensor idx = at::tensor(ms.slots[g], at::TensorOptions().dtype(at::kLong)).to(h.device());  // [mg]
      const at::Tensor hg = h.index_select(0, idx).narrow(1, 0, ms.modules[g]->size(1));                 // [mg, r]
      y.index_add_(0, outRowsT ? outRowsT->index_select(0, idx) : idx, mx::Linear(hg, *ms.modules[g], c10::nullopt));
    }
    if (columnScales) y.mul_(columnScales->index_select(0, membersT));  // [m, out]
    return mx::Put(info.Env(), y);
  }
  // The CPU kernel: each chunk's rows of h gathered (its member's r columns), then the products split between
  // threads by output columns, each thread adding its columns of every chunk in member and slot order (so a
  // row's sum runs in the same order whatever the threads). With a base, row i of y [m, out] is written once.
  at::Tensor y = base ? at::empty({m, out}, h.options()) : at::zeros({outCount, out}, h.options());
  float* yp = y.data_ptr<float>();
  const at::Tensor baseC = base ? base->contiguous() : at::Tensor();
  const at::Tensor scalesC = columnScales ? columnScales->contiguous() : at::Tensor();
  const float* bp = base ? baseC.data_ptr<float>() : nullptr;
  const float* sp = columnScales ? scalesC.data_ptr<float>() : nullptr;
  const auto baseRowOf = [&](int64_t i) { return bp + (baseRows.rows ? baseRows.rows[i] : i) * out; };
  const std::vector<Chunk> chunks = ChunksOf(ms);
  if (base) {
    // Rows no chunk writes (members without modules): their base row, scaled.
    std::vector<bool> written(m, false);
    for (const Chunk& c : chunks)
      for (int64_t j = 0; j < c.rows; j++) written[c.slots[j]] = true;
    for (int64_t i = 0; i < m; i++) {
      if (written[i]) continue;
      const float* b = baseRowOf(i);
      const float* sc = sp ? sp + ms.of[i] * out : nullptr;
      for (int64_t o = 0; o < out; o++) yp[i * out + o] = sc ? b[o] * sc[o] : b[o];
    }
  }
  if (chunks.empty()) return mx::Put(info.Env(), y);
  const at::Tensor hc = h.contiguous();
  const float* hp = hc.data_ptr<float>();
  std::vector<int64_t> hAt(chunks.size() + 1, 0);
  for (size_t k = 0; k < chunks.size(); k++) hAt[k + 1] = hAt[k] + chunks[k].rows * ms.modules[chunks[k].g]->size(1);
  std::vector<float> H(hAt.back());
  for (size_t k = 0; k < chunks.size(); k++) {
    const int64_t r = ms.modules[chunks[k].g]->size(1);
    for (int64_t j = 0; j < chunks[k].rows; j++)
      std::memcpy(&H[hAt[k] + j * r], hp + chunks[k].slots[j] * R, r * sizeof(float));
  }
  at::parallel_for(0, out, 64, [&](int64_t o0, int64_t o1) {
    std::vector<float> t(kChunkRows * out);
    for (size_t k = 0; k < chunks.size(); k++) {
      const Chunk& c = chunks[k];
      const int64_t r = ms.modules[c.g]->size(1);
      mx::SmallDotRange(&H[hAt[k]], c.rows, ms.modules[c.g]->data_ptr<float>(), nullptr, t.data(), r, out, o0, o1);
      for (int64_t j = 0; j < c.rows; j++) {
        const int64_t i = c.slots[j];
        const float* tr = t.data() + j * out;
        if (!base) {
          float* yr = yp + (outRows.rows ? outRows.rows[i] : i) * out;
          for (int64_t o = o0; o < o1; o++) yr[o] += tr[o];
          continue;
        }
        float* yr = yp + i * out;
        const float* b = baseRowOf(i);
        const float* sc = sp ? sp + c.g * out : nullptr;
        for (int64_t o = o0; o < o1; o++) yr[o] = sc ? (b[o] + tr[o]) * sc[o] : b[o] + tr[o];
      }
    }
  });
  return mx::Put(info.Env(), y);
}
}  // namespace

namespace mx {
void RegisterLowRank(Napi::Env env, Napi::Object exports) {
  MX_EXPORT(exports, lowRankShrink);
  MX_EXPORT(exports, lowRankExpand);
}
}  // namespace mx

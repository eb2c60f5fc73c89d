// AdamW with 8-bit blockwise optimizer state (Dettmers et al. 2022, "8-bit Optimizers via Block-wise
// Quantization"; bitsandbytes' AdamW8bit). Each moment is stored as one byte per value, an index into a
// 256-entry dynamic quantisation map, with one float32 absmax per block of 256 consecutive values: 2.03
// bytes per value against 8 for two float32 moments. A step dequantises a block, applies AdamW's float32
// update with the fresh moments (as PyTorch's single-tensor AdamW orders it), then requantises each
// moment to the nearest map entry against the block's new absmax.
//
// Two executors with the same arithmetic: a one-pass loop for contiguous float32 CPU tensors, and ATen
// tensor ops for everything else (CUDA, other dtypes). `forceTensorOps` picks the second on the CPU so
// tests can hold them against each other and against the Python reference.
#include "common.h"

#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {
using namespace mx;

constexpr int64_t kBlock = 256;

// bitsandbytes' create_dynamic_map(signed, max_exponent_bits=7, total_bits=8), computed with the same
// float32 ATen ops so the entries are identical: for each decimal exponent, the midpoints of an evenly
// spaced fraction grid, plus 0 and 1, sorted. Signed: 127 negative, 0, 128 positive; unsigned: 256 ≥ 0.
at::Tensor DynamicMap(bool isSigned) {
  const int maxExponentBits = 7, totalBits = 8;
  const int nonSignBits = totalBits - 1;
  std::vector<at::Tensor> parts;
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  for (int i = 0; i < maxExponentBits; i++) {
    int64_t items = isSigned ? (int64_t{1} << (i + nonSignBits - maxExponentBits)) + 1
                             : (int64_t{1} << (i + nonSignBits - maxExponentBits + 1)) + 1;
    at::Tensor bounds = at::linspace(0.1, 1, items, f32);
    at::Tensor means = (bounds.slice(0, 0, -1) + bounds.slice(0, 1)) / 2.0;  // [items - 1]
    double scale = std::pow(10.0, -(maxExponentBits - 1) + i);
    parts.push_back(means * scale);
    if (isSigned) parts.push_back(means * -scale);
  }
  parts.push_back(at::zeros({1}, f32));
  parts.push_back(at::ones({1}, f32));
  at::Tensor map = std::get<0>(at::sort(at::cat(parts)));  // [256], ascending
  if (map.numel() != 256) throw std::runtime_error("adamw8bit: the dynamic map must have 256 entries");
  return map.contiguous();
}

const at::Tensor& SignedMap() {
  static const at::Tensor map = DynamicMap(true);
  return map;
}
const at::Tensor& UnsignedMap() {
  static const at::Tensor map = DynamicMap(false);
  return map;
}

// The index of the map entry nearest x (ties: the lower entry), over a sorted 256-entry map. The two
// distances are exact in float64 (float32 differences could round a near-tie the wrong way).
inline uint8_t Nearest(const float* map, float x) {
  const float* hi = std::lower_bound(map + 1, map + 255, x);  // first entry >= x among 1..254, else 255
  const float* lo = hi - 1;
  const double xd = x;
  return static_cast<uint8_t>((xd - *lo <= *hi - xd) ? lo - map : hi - map);
}

// Nearest() for a whole map at the speed of a table lookup: every float whose top 16 bits are the same
// (sign, exponent, 7 mantissa bits: a bucket 1/128 of its octave wide) starts from the code nearest the
// bucket's smallest value, then steps up while the next entry is nearer. A bucket is narrower than the
// gap between two of the map's midpoints, so this takes one or two comparisons instead of a binary
// search's eight unpredictable branches, and gives exactly Nearest()'s code.
class NearestTable {
 public:
  explicit NearestTable(const at::Tensor& map) : map_(map.data_ptr<float>()), start_(1 << 16) {
    for (uint32_t key = 0; key < (1u << 16); key++) {
      // The bucket's smallest value: low bits 0 for a positive float, all ones for a negative one.
      uint32_t bits = (key << 16) | ((key & 0x8000u) ? 0xFFFFu : 0u);
      float lowest;
      std::memcpy(&lowest, &bits, sizeof lowest);
      start_[key] = std::isnan(lowest) ? 0 : Nearest(map_, lowest);
    }
  }
  uint8_t operator()(float x) const {
    uint32_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    int c = start_[bits >> 16];
    const double xd = x;
    while (c < 255 && xd - map_[c] > map_[c + 1] - xd) c++;  // a tie stays on the lower entry
    return static_cast<uint8_t>(c);
  }

 private:
  const float* map_;
  std::vector<uint8_t> start_;
};

const NearestTable& SignedTable() {
  static const NearestTable table(SignedMap());
  return table;
}
const NearestTable& UnsignedTable() {
  static const NearestTable table(UnsignedMap());
  return table;
}

struct Hyper {
  double lr, beta1, beta2, eps, weightDecay, step;
};

// One parameter, contiguous float32 on the CPU: blocks in parallel, one pass each.
void StepLoop(at::Tensor& p, const at::Tensor& g, at::Tensor& mCodes, at::Tensor& mAbsmax, at::Tensor& vCodes,
              at::Tensor& vAbsmax, const Hyper& h) {
  const int64_t n = p.numel();
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  float* pp = p.data_ptr<float>();
  const float* gp = g.data_ptr<float>();
  uint8_t* mq = mCodes.data_ptr<uint8_t>();
  uint8_t* vq = vCodes.data_ptr<uint8_t>();
  float* ma = mAbsmax.data_ptr<float>();
  float* va = vAbsmax.data_ptr<float>();
  const float* mapS = SignedMap().data_ptr<float>();
  const float* mapU = UnsignedMap().data_ptr<float>();
  const NearestTable& nearestS = SignedTable();
  const NearestTable& nearestU = UnsignedTable();
  const float decay = static_cast<float>(1 - h.lr * h.weightDecay);
  const float w1 = static_cast<float>(1 - h.beta1);
  const float b2 = static_cast<float>(h.beta2), w2 = static_cast<float>(1 - h.beta2);
  const float bc2Sqrt = static_cast<float>(std::sqrt(1 - std::pow(h.beta2, h.step)));
  const float stepSize = static_cast<float>(h.lr / (1 - std::pow(h.beta1, h.step)));
  const float eps = static_cast<float>(h.eps);
  at::parallel_for(0, blocks, 16, [&](int64_t b0, int64_t b1) {
    float m[kBlock], v[kBlock];
    for (int64_t b = b0; b < b1; b++) {
      const int64_t s = b * kBlock, len = std::min(kBlock, n - s);
      const float mScale = ma[b], vScale = va[b];
      float mMax = 0, vMax = 0;
      for (int64_t i = 0; i < len; i++) {
        const float gi = gp[s + i];
        float mi = mapS[mq[s + i]] * mScale;
        float vi = mapU[vq[s + i]] * vScale;
        mi = mi + w1 * (gi - mi);      // lerp_(g, 1 - beta1)
        vi = vi * b2 + w2 * (gi * gi);  // mul_(beta2).addcmul_(g, g, 1 - beta2)
        float pi = pp[s + i] * decay;
        pp[s + i] = pi - stepSize * (mi / (std::sqrt(vi) / bc2Sqrt + eps));
        m[i] = mi;
        v[i] = vi;
        mMax = std::max(mMax, std::fabs(mi));
        vMax = std::max(vMax, vi);
      }
      ma[b] = mMax;
      va[b] = vMax;
      for (int64_t i = 0; i < len; i++) {
        mq[s + i] = nearestS(mMax > 0 ? m[i] / mMax : 0.0f);
        vq[s + i] = nearestU(vMax > 0 ? v[i] / vMax : 0.0f);
      }
    }
  });
}

// Nearest map entry for every value of x (any shape, float32), as uint8 codes of the same shape.
at::Tensor NearestCodes(const at::Tensor& map, const at::Tensor& x) {
  at::Tensor hi = at::searchsorted(map, x).clamp(1, 255);  // first entry >= x
  at::Tensor lo = hi - 1;
  const at::Tensor xd = x.to(at::kDouble), mapD = map.to(at::kDouble);  // exact distances, as the loop's
  at::Tensor pickLo =
      (xd - mapD.index_select(0, lo.flatten()).view_as(x)) <= (mapD.index_select(0, hi.flatten()).view_as(x) - xd);
  return at::where(pickLo, lo, hi).to(at::kByte);
}

// Any device and dtype: the same steps with tensor ops over [blocks, 256] views (the tail padded).
void StepTensorOps(at::Tensor& p, const at::Tensor& grad, at::Tensor& mCodes, at::Tensor& mAbsmax, at::Tensor& vCodes,
                   at::Tensor& vAbsmax, const Hyper& h) {
  const int64_t n = p.numel();
  const int64_t blocks = (n + kBlock - 1) / kBlock, pad = blocks * kBlock - n;
  const at::Tensor mapS = SignedMap().to(p.device()), mapU = UnsignedMap().to(p.device());
  auto padded = [&](const at::Tensor& flat, double value) {  // [n] -> [blocks, 256]
    return at::constant_pad_nd(flat, {0, pad}, value).view({blocks, kBlock});
  };
  at::Tensor g = padded(grad.reshape(-1).to(at::kFloat), 0);
  at::Tensor m = mapS.index_select(0, mCodes.reshape(-1).to(at::kLong)).view(-1);  // [n]
  at::Tensor v = mapU.index_select(0, vCodes.reshape(-1).to(at::kLong)).view(-1);
  m = padded(m, 0) * mAbsmax.unsqueeze(1);  // [blocks, 256]
  v = padded(v, 0) * vAbsmax.unsqueeze(1);
  m = m + (g - m) * (1 - h.beta1);
  v = v * h.beta2 + (g * g) * (1 - h.beta2);
  const double bc2Sqrt = std::sqrt(1 - std::pow(h.beta2, h.step));
  const double stepSize = h.lr / (1 - std::pow(h.beta1, h.step));
  at::Tensor update = m / (v.sqrt() / bc2Sqrt + h.eps);  // [blocks, 256]
  p.mul_(1 - h.lr * h.weightDecay);
  p.sub_(update.view(-1).slice(0, 0, n).view(p.sizes()).to(p.scalar_type()) * stepSize);
  at::Tensor mMax = m.abs().amax(1), vMax = v.amax(1);  // [blocks]
  at::Tensor mNorm = m / mMax.clamp_min(std::numeric_limits<float>::min()).unsqueeze(1);
  at::Tensor vNorm = v / vMax.clamp_min(std::numeric_limits<float>::min()).unsqueeze(1);
  mCodes.copy_(NearestCodes(mapS, mNorm).view(-1).slice(0, 0, n).view(mCodes.sizes()));
  vCodes.copy_(NearestCodes(mapU, vNorm).view(-1).slice(0, 0, n).view(vCodes.sizes()));
  mAbsmax.copy_(mMax);
  vAbsmax.copy_(vMax);
}

void CheckState(const at::Tensor& p, const at::Tensor& codes, const at::Tensor& absmax, size_t i) {
  const int64_t blocks = (p.numel() + kBlock - 1) / kBlock;
  if (codes.scalar_type() != at::kByte || codes.numel() != p.numel() || !codes.is_contiguous())
    throw ArgError("adamw8bit: parameter " + std::to_string(i) + ": codes must be contiguous uint8, one per value");
  if (absmax.scalar_type() != at::kFloat || absmax.numel() != blocks || !absmax.is_contiguous())
    throw ArgError("adamw8bit: parameter " + std::to_string(i) + ": absmax must be contiguous float32, one per 256 values");
  if (codes.device() != p.device() || absmax.device() != p.device())
    throw ArgError("adamw8bit: parameter " + std::to_string(i) + ": state on another device than the parameter");
}

// adamw8bit(params[], mCodes[], mAbsmax[], vCodes[], vAbsmax[], step, lr, beta1, beta2, eps, weightDecay,
//           forceTensorOps). `step` is the step number after this update. Params without a gradient are skipped.
MX_FN(adamw8bit) {
  auto params = GetList(info[0]);
  auto mCodes = GetList(info[1]), mAbsmax = GetList(info[2]), vCodes = GetList(info[3]), vAbsmax = GetList(info[4]);
  if (mCodes.size() != params.size() || mAbsmax.size() != params.size() || vCodes.size() != params.size() ||
      vAbsmax.size() != params.size())
    throw ArgError("adamw8bit: one set of state tensors per parameter");
  Hyper h{Num(info[6]), Num(info[7]), Num(info[8]), Num(info[9]), Num(info[10]), Num(info[5])};
  const bool forceTensorOps = Bool(info[11]);
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); i++) {
    at::Tensor& p = params[i];
    const at::Tensor& g = p.grad();
    if (!g.defined()) continue;
    CheckState(p, mCodes[i], mAbsmax[i], i);
    CheckState(p, vCodes[i], vAbsmax[i], i);
    const bool loop = !forceTensorOps && p.device().is_cpu() && p.scalar_type() == at::kFloat &&
                      g.scalar_type() == at::kFloat && p.is_contiguous() && g.is_contiguous();
    if (loop) StepLoop(p, g, mCodes[i], mAbsmax[i], vCodes[i], vAbsmax[i], h);
    else StepTensorOps(p, g, mCodes[i], mAbsmax[i], vCodes[i], vAbsmax[i], h);
  }
  return info.Env().Undefined();
}

// adamw8bitMaps() -> [signed map, unsigned map]: the two 256-entry float32 quantisation maps (for tests
// and for reading saved state elsewhere).
MX_FN(adamw8bitMaps) {
  auto out = Napi::Array::New(info.Env(), 2);
  out.Set(0u, Put(info.Env(), SignedMap().clone()));
  out.Set(1u, Put(info.Env(), UnsignedMap().clone()));
  return out;
}

// adamw8bitNearest(x float32 [n] on the CPU, signed) -> uint8 [n]: each value's nearest entry of the
// signed or unsigned map, as the step's loop quantises (for tests).
MX_FN(adamw8bitNearest) {
  at::Tensor x = Get(info[0]).contiguous();
  if (!x.device().is_cpu() || x.scalar_type() != at::kFloat || x.dim() != 1)
    throw ArgError("adamw8bitNearest: x must be a 1-D float32 CPU tensor");
  const NearestTable& table = Bool(info[1]) ? SignedTable() : UnsignedTable();
  at::Tensor codes = at::empty({x.numel()}, x.options().dtype(at::kByte));
  const float* xp = x.data_ptr<float>();
  uint8_t* cp = codes.data_ptr<uint8_t>();
  for (int64_t i = 0; i < x.numel(); i++) cp[i] = table(xp[i]);
  return Put(info.Env(), codes);
}

}  // namespace

namespace mx {
void RegisterOptim8bit(Napi::Env env, Napi::Object exports) {
  MX_EXPORT(exports, adamw8bit);
  MX_EXPORT(exports, adamw8bitMaps);
  MX_EXPORT(exports, adamw8bitNearest);
}
}  // namespace mx

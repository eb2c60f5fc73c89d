// Semantics: adamw8bit(params, grads, 8-bit moment codes and block absmaxes, step, hyperparameters): one
// AdamW step in place, the moments requantised; adamw8bitMaps/adamw8bitNearest expose the maps for tests.
//
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

// bitsandbytes' create_dynamic_map(signed, max_exponent_bits=7, total_bits=8) as PyTorch 2.x evaluates it in
// float32 (test/reference/adamw_8bit.py recomputes it): for each decimal exponent, the midpoints of an evenly
// spaced fraction grid, plus 0 and 1, sorted. Signed: 127 negative, 0, 128 positive; unsigned: 256 >= 0.
// Written out rather than computed with at::linspace, whose float32 rounding differs between libtorch
// versions (1.13 lands one ulp away on some entries): saved 8-bit state must mean the same everywhere.
constexpr float kSignedMap[256] = {
    -0.992968738f, -0.978906274f, -0.96484375f, -0.950781226f, -0.936718762f, -0.922656238f,
    -0.908593774f, -0.89453125f, -0.880468726f, -0.866406262f, -0.852343738f, -0.838281274f,
    -0.82421875f, -0.810156226f, -0.796093762f, -0.782031238f, -0.767968774f, -0.75390625f,
    -0.739843726f, -0.725781262f, -0.711718798f, -0.697656274f, -0.68359375f, -0.669531226f,
    -0.655468762f, -0.641406298f, -0.627343774f, -0.61328125f, -0.599218726f, -0.585156262f,
    -0.571093798f, -0.557031274f, -0.54296875f, -0.528906226f, -0.514843702f, -0.500781238f,
    -0.486718714f, -0.47265625f, -0.458593726f, -0.444531262f, -0.430468738f, -0.416406244f,
    -0.40234375f, -0.388281226f, -0.374218762f, -0.360156238f, -0.346093744f, -0.33203125f,
    -0.317968726f, -0.303906262f, -0.289843738f, -0.275781274f, -0.26171875f, -0.247656241f,
    -0.233593747f, -0.219531253f, -0.205468744f, -0.19140625f, -0.177343756f, -0.163281247f,
    -0.149218753f, -0.135156244f, -0.12109375f, -0.107031256f, -0.0985937491f, -0.0957812592f,
    -0.0929687545f, -0.0901562497f, -0.0873437524f, -0.0845312476f, -0.0817187577f, -0.078906253f,
    -0.0760937482f, -0.0732812509f, -0.0704687461f, -0.0676562563f, -0.0648437515f, -0.0620312504f,
    -0.0592187531f, -0.0564062484f, -0.053593751f, -0.05078125f, -0.047968749f, -0.0451562516f,
    -0.0423437469f, -0.0395312496f, -0.0367187522f, -0.0339062512f, -0.0310937501f, -0.028281251f,
    -0.0254687499f, -0.0226562507f, -0.0198437516f, -0.0170312505f, -0.0142187504f, -0.0114062503f,
    -0.00971874967f, -0.00915624946f, -0.00859375019f, -0.00803124998f, -0.00746874977f, -0.00690625003f,
    -0.00634374982f, -0.00578125007f, -0.00521875033f, -0.00465624966f, -0.00409374991f, -0.00353124971f,
    -0.00296874996f, -0.00240624999f, -0.00184375001f, -0.00128124992f, -0.000943750085f, -0.000831249985f,
    -0.00071875006f, -0.000606250076f, -0.000493750034f, -0.000381250022f, -0.000268750038f, -0.000156250011f,
    -8.87499991e-05f, -6.62500024e-05f, -4.37499984e-05f, -2.12499981e-05f, -7.7499999e-06f, -3.25000019e-06f,
    -5.50000038e-07f, 0.0f, 5.50000038e-07f, 3.25000019e-06f, 7.7499999e-06f, 2.12499981e-05f,
    4.37499984e-05f, 6.62500024e-05f, 8.87499991e-05f, 0.000156250011f, 0.000268750038f, 0.000381250022f,
    0.000493750034f, 0.000606250076f, 0.00071875006f, 0.000831249985f, 0.000943750085f, 0.00128124992f,
    0.00184375001f, 0.00240624999f, 0.00296874996f, 0.00353124971f, 0.00409374991f, 0.00465624966f,
    0.00521875033f, 0.00578125007f, 0.00634374982f, 0.00690625003f, 0.00746874977f, 0.00803124998f,
    0.00859375019f, 0.00915624946f, 0.00971874967f, 0.0114062503f, 0.0142187504f, 0.0170312505f,
    0.0198437516f, 0.0226562507f, 0.0254687499f, 0.028281251f, 0.0310937501f, 0.0339062512f,
    0.0367187522f, 0.0395312496f, 0.0423437469f, 0.0451562516f, 0.047968749f, 0.05078125f,
    0.053593751f, 0.0564062484f, 0.0592187531f, 0.0620312504f, 0.0648437515f, 0.0676562563f,
    0.0704687461f, 0.0732812509f, 0.0760937482f, 0.078906253f, 0.0817187577f, 0.0845312476f,
    0.0873437524f, 0.0901562497f, 0.0929687545f, 0.0957812592f, 0.0985937491f, 0.107031256f,
    0.12109375f, 0.135156244f, 0.149218753f, 0.163281247f, 0.177343756f, 0.19140625f,
    0.205468744f, 0.219531253f, 0.233593747f, 0.247656241f, 0.26171875f, 0.275781274f,
    0.289843738f, 0.303906262f, 0.317968726f, 0.33203125f, 0.346093744f, 0.360156238f,
    0.374218762f, 0.388281226f, 0.40234375f, 0.416406244f, 0.430468738f, 0.444531262f,
    0.458593726f, 0.47265625f, 0.486718714f, 0.500781238f, 0.514843702f, 0.528906226f,
    0.54296875f, 0.557031274f, 0.571093798f, 0.585156262f, 0.599218726f, 0.61328125f,
    0.627343774f, 0.641406298f, 0.655468762f, 0.669531226f, 0.68359375f, 0.697656274f,
    0.711718798f, 0.725781262f, 0.739843726f, 0.75390625f, 0.767968774f, 0.782031238f,
    0.796093762f, 0.810156226f, 0.82421875f, 0.838281274f, 0.852343738f, 0.866406262f,
    0.880468726f, 0.89453125f, 0.908593774f, 0.922656238f, 0.936718762f, 0.950781226f,
    0.96484375f, 0.978906274f, 0.992968738f, 1.0f,
};
constexpr float kUnsignedMap[256] = {
    0.0f, 3.2500003e-07f, 7.7499999e-07f, 2.12499981e-06f, 4.37499966e-06f, 6.62499997e-06f,
    8.87499937e-06f, 1.56249989e-05f, 2.68750009e-05f, 3.81249993e-05f, 4.93749976e-05f, 6.06250032e-05f,
    7.18750016e-05f, 8.31249927e-05f, 9.43749983e-05f, 0.000128125001f, 0.000184375007f, 0.000240625013f,
    0.00029687502f, 0.000353124982f, 0.000409375032f, 0.000465625024f, 0.000521875045f, 0.000578125007f,
    0.000634375028f, 0.000690625049f, 0.000746875012f, 0.000803125091f, 0.000859375054f, 0.000915625016f,
    0.000971875037f, 0.00114062498f, 0.00142187497f, 0.00170312496f, 0.00198437506f, 0.00226562493f,
    0.00254687481f, 0.00282812491f, 0.00310937478f, 0.00339062512f, 0.00367187499f, 0.00395312486f,
    0.0042343745f, 0.00451562507f, 0.00479687471f, 0.00507812481f, 0.00535937492f, 0.00564062456f,
    0.00592187513f, 0.00620312477f, 0.00648437487f, 0.00676562544f, 0.00704687461f, 0.00732812518f,
    0.00760937436f, 0.00789062493f, 0.00817187503f, 0.0084531242f, 0.00873437524f, 0.00901562441f,
    0.00929687452f, 0.00957812555f, 0.00985937472f, 0.010703126f, 0.0121093756f, 0.0135156242f,
    0.0149218757f, 0.0163281243f, 0.0177343767f, 0.0191406254f, 0.020546874f, 0.0219531264f,
    0.0233593751f, 0.0247656237f, 0.0261718761f, 0.0275781285f, 0.0289843734f, 0.0303906258f,
    0.0317968726f, 0.033203125f, 0.0346093737f, 0.036015626f, 0.0374218784f, 0.0388281234f,
    0.0402343757f, 0.0416406244f, 0.0430468731f, 0.0444531254f, 0.0458593741f, 0.0472656265f,
    0.0486718714f, 0.0500781238f, 0.0514843725f, 0.0528906249f, 0.0542968772f, 0.0557031296f,
    0.057109382f, 0.0585156269f, 0.0599218719f, 0.0613281243f, 0.0627343804f, 0.0641406327f,
    0.0655468777f, 0.0669531226f, 0.068359375f, 0.0697656274f, 0.0711718798f, 0.0725781247f,
    0.0739843771f, 0.0753906295f, 0.0767968819f, 0.0782031268f, 0.0796093792f, 0.0810156241f,
    0.0824218765f, 0.0838281289f, 0.0852343738f, 0.0866406262f, 0.0880468711f, 0.0894531235f,
    0.0908593759f, 0.0922656283f, 0.0936718807f, 0.0950781256f, 0.096484378f, 0.0978906304f,
    0.0992968753f, 0.103515625f, 0.110546872f, 0.117578126f, 0.124609374f, 0.131640613f,
    0.138671875f, 0.145703137f, 0.152734369f, 0.159765631f, 0.166796863f, 0.173828125f,
    0.180859387f, 0.187890619f, 0.194921881f, 0.201953113f, 0.208984375f, 0.216015637f,
    0.223046869f, 0.230078131f, 0.237109363f, 0.244140625f, 0.251171857f, 0.258203119f,
    0.265234381f, 0.272265613f, 0.279296875f, 0.286328137f, 0.293359369f, 0.300390601f,
    0.307421863f, 0.314453125f, 0.321484387f, 0.328515619f, 0.335546851f, 0.342578113f,
    0.349609375f, 0.356640637f, 0.363671869f, 0.370703101f, 0.377734363f, 0.384765625f,
    0.391796887f, 0.398828119f, 0.405859351f, 0.412890613f, 0.419921875f, 0.426953137f,
    0.433984369f, 0.441015601f, 0.448046863f, 0.455078125f, 0.462109387f, 0.469140619f,
    0.476171851f, 0.483203113f, 0.490234375f, 0.497265607f, 0.504296899f, 0.511328101f,
    0.518359363f, 0.525390625f, 0.532421827f, 0.539453149f, 0.546484351f, 0.553515673f,
    0.560546875f, 0.567578137f, 0.574609399f, 0.581640601f, 0.588671923f, 0.595703125f,
    0.602734387f, 0.609765649f, 0.616796851f, 0.623828173f, 0.630859375f, 0.637890637f,
    0.644921899f, 0.651953101f, 0.658984423f, 0.666015625f, 0.673046887f, 0.680078149f,
    0.687109351f, 0.694140673f, 0.701171875f, 0.708203137f, 0.715234399f, 0.722265601f,
    0.729296923f, 0.736328125f, 0.743359387f, 0.750390649f, 0.757421851f, 0.764453173f,
    0.771484375f, 0.778515577f, 0.785546899f, 0.792578101f, 0.799609423f, 0.806640625f,
    0.813671827f, 0.820703149f, 0.827734351f, 0.834765673f, 0.841796875f, 0.848828077f,
    0.855859399f, 0.862890601f, 0.869921923f, 0.876953125f, 0.883984327f, 0.891015649f,
    0.898046851f, 0.905078173f, 0.912109375f, 0.919140577f, 0.926171899f, 0.933203101f,
    0.940234423f, 0.947265625f, 0.954296827f, 0.961328149f, 0.968359351f, 0.975390673f,
    0.982421875f, 0.989453077f, 0.996484399f, 1.0f,
};

const at::Tensor& SignedMap() {
  static const at::Tensor map = at::from_blob(const_cast<float*>(kSignedMap), {256}, at::kFloat).clone();
  return map;
}
const at::Tensor& UnsignedMap() {
  static const at::Tensor map = at::from_blob(const_cast<float*>(kUnsignedMap), {256}, at::kFloat).clone();
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

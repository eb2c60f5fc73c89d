// Semantics: SmallLinear(x [n, in] float32 with n ≤ 16, W [out, in] float32 or bfloat16, b [out]?) = x Wᵀ + b
// [n, out] float32, outside autograd; each output row depends on its own input row only.
//
// x Wᵀ + b for a handful of rows (a decode step: one token per sequence), float32 on the CPU. A GEMM
// library's kernels are built for many rows: on 1-16 rows oneDNN spends 15-50 µs per call on setup and
// reaches a fraction of the memory bandwidth that such a product is bound by, and a serving step runs
// a few hundred of them (every projection, every adapter's A and B). Here each output element is one dot
// product of a weight row with an input row, the weight streamed once from memory for all rows, the
// output rows split between threads. Each element is computed the same way whatever the number of rows
// or threads, so a sequence decoded among others gets the same floats as decoded alone. A bfloat16 weight
// (a bfloat16 model computing in float32, src/tensor/compute-mode.ts) is read as such, half the bytes, and
// widened in registers (a bfloat16 is the top half of a float32): the same products and sums as on the
// weight converted to float32 beforehand, bit for bit.
#include "common.h"

#include <ATen/Parallel.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <strings.h>  // strcasecmp

namespace mx {
namespace {

constexpr int64_t kMaxRows = 16;

typedef float Floats16 __attribute__((vector_size(64)));
typedef float Floats8 __attribute__((vector_size(32)));
typedef float Floats4 __attribute__((vector_size(16)));

// Width weights from w as floats into v: loaded as they are, or (bfloat16, as uint16_t) widened by a shift.
// (v by reference: a vector returned by value would change the ABI outside the vector targets.)
template <int Width>
struct Bf16Vectors;
template <>
struct Bf16Vectors<8> {
  typedef uint16_t Halves __attribute__((vector_size(16)));
  typedef uint32_t Words __attribute__((vector_size(32)));
};
template <>
struct Bf16Vectors<16> {
  typedef uint16_t Halves __attribute__((vector_size(32)));
  typedef uint32_t Words __attribute__((vector_size(64)));
};
template <typename V, int Width>
__attribute__((always_inline)) inline void LoadWeights(V& v, const float* w) {
  std::memcpy(&v, w, sizeof(V));  // unaligned load
}
template <typename V, int Width>
__attribute__((always_inline)) inline void LoadWeights(V& v, const uint16_t* w) {
  typename Bf16Vectors<Width>::Halves h;
  std::memcpy(&h, w, sizeof(h));
  const auto words = __builtin_convertvector(h, typename Bf16Vectors<Width>::Words) << 16;
  static_assert(sizeof(words) == sizeof(V), "as many bfloat16 as floats");
  std::memcpy(&v, &words, sizeof(V));
}
inline float WeightValue(float w) { return w; }
inline float WeightValue(uint16_t w) {
  const uint32_t bits = static_cast<uint32_t>(w) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// Σ lanes of v as (lo half + hi half) repeatedly: 16 -> 8 -> 4 -> 2 -> 1.
template <int Width, typename V>
__attribute__((always_inline)) inline float SumLanes(const V& v) {
  if constexpr (Width == 16) {
    return SumLanes<8>(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                       __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15));
  } else if constexpr (Width == 8) {
    return SumLanes<4>(__builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7));
  } else {
    static_assert(Width == 4, "vectors of 4, 8 or 16 floats");
    const float a = v[0] + v[2], b = v[1] + v[3];
    return a + b;
  }
}

// y[m, o] = x[m, :] · w[o, :] (+ b[o]) for the MB rows of x and o in [o, o + R), with vectors of Width
// floats of type V: each load of x serves R products, each load of w MB. `ahead` (floats, 0 for none) is
// how far ahead of the weight rows read now to prefetch: the next pass's rows. Without it a pass that
// computes for several rows issues its loads too slowly for the hardware prefetcher, and 8 rows read the
// weight at about half the bandwidth that 1 row does.
template <typename V, int Width, int MB, int R, typename W>
__attribute__((always_inline)) inline void DotRowBlock(const float* x, const W* w, const float* b, float* y,
                                                       int64_t in, int64_t out, int64_t o, int64_t ahead) {
  V acc[R][MB];  // kept in registers (the loops over r and m are unrolled)
#pragma GCC unroll 16
  for (int r = 0; r < R; r++)
#pragma GCC unroll 16
    for (int m = 0; m < MB; m++) acc[r][m] = V{};
  int64_t k = 0;
  for (; k + Width <= in; k += Width) {
    V wv[R];
#pragma GCC unroll 16
    for (int r = 0; r < R; r++) LoadWeights<V, Width>(wv[r], w + (o + r) * in + k);
    if (ahead) {
      // One cache line per vector of 16 floats (AVX-512); with AVX2 every other prefetch repeats a line.
#pragma GCC unroll 16
      for (int r = 0; r < R; r++) __builtin_prefetch(w + (o + r) * in + k + ahead, 0, 0);
    }
#pragma GCC unroll 16
    for (int m = 0; m < MB; m++) {
      V xv;
      std::memcpy(&xv, x + m * in + k, sizeof(V));
      // One load of x for the R products: without this the compiler folds the load into every FMA, and
      // the loop is bound by loads (R·MB + R per step instead of MB + R).
      if constexpr (R > 1) asm("" : "+v"(xv));
#pragma GCC unroll 16
      for (int r = 0; r < R; r++) acc[r][m] += xv * wv[r];
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; r++) {
    const W* wr = w + (o + r) * in;
#pragma GCC unroll 16
    for (int m = 0; m < MB; m++) {
      // The lanes summed pairwise (halves added in registers), then the tail: a fixed order for every
      // row count, block size and pass width.
      float s = SumLanes<Width>(acc[r][m]);
      for (int64_t j = k; j < in; j++) s += x[m * in + j] * WeightValue(wr[j]);
      y[m * out + o + r] = b ? s + b[o + r] : s;
    }
  }
}

// Rows of x per block: 8 with AVX-512 (32 vector registers), 4 with AVX2 (16).
constexpr int MaxBlock(int width) { return width == 16 ? 8 : 4; }

// Weight rows per pass for blocks of MB rows of x: as many as the registers hold (R·MB accumulators,
// R weight vectors, one of x), at most 4.
constexpr int RowsPerPass(int MB, int registers) {
  const int r = (registers - 1) / (MB + 1);
  return r > 4 ? 4 : r < 1 ? 1 : r;
}

// One pass: every row of x against weight rows [o, o + R), in blocks of at most MaxBlock rows of x (see
// DotRows).
template <typename V, int Width, int M, int R, typename W>
__attribute__((always_inline)) inline void DotPass(const float* x, const W* w, const float* b, float* y,
                                                   int64_t in, int64_t out, int64_t o, int64_t ahead) {
  constexpr int kBlocks = (M + MaxBlock(Width) - 1) / MaxBlock(Width);
  constexpr int kBig = (M + kBlocks - 1) / kBlocks;     // rows in the first blocks
  constexpr int kBigBlocks = M - (kBig - 1) * kBlocks;  // how many have kBig rows; the rest kBig - 1
#pragma GCC unroll 16
  for (int i = 0; i < kBlocks; i++) {
    const int64_t m0 = i < kBigBlocks ? i * kBig : kBigBlocks * kBig + (i - kBigBlocks) * (kBig - 1);
    if (i < kBigBlocks)
      DotRowBlock<V, Width, kBig, R, W>(x + m0 * in, w, b, y + m0 * out, in, out, o, ahead);
    else if constexpr (kBig > 1)
      DotRowBlock<V, Width, kBig - 1, R, W>(x + m0 * in, w, b, y + m0 * out, in, out, o, ahead);
  }
}

// All M rows of x against weight rows [o0, o1). The rows go in blocks of at most 8 (AVX-512) or 4 (AVX2),
// as even as possible: a block's accumulators stay in registers, and a pass's weight rows, read from
// memory for the first block, are still in L1 for the next (16 rows in one block would leave room for
// one weight row per pass, and 17 loads per 16 FMAs).
template <typename V, int Width, int M, typename W>
__attribute__((always_inline)) inline void DotRows(const float* x, const W* w, const float* b, float* y,
                                                   int64_t in, int64_t out, int64_t o0, int64_t o1) {
  constexpr int kBlocks = (M + MaxBlock(Width) - 1) / MaxBlock(Width);
  constexpr int R = RowsPerPass((M + kBlocks - 1) / kBlocks, Width == 16 ? 32 : 16);
  int64_t o = o0;
  for (; o + 2 * R <= o1; o += R) DotPass<V, Width, M, R, W>(x, w, b, y, in, out, o, R * in);
  for (; o + R <= o1; o += R) DotPass<V, Width, M, R, W>(x, w, b, y, in, out, o, 0);
  for (; o < o1; o++) DotPass<V, Width, M, 1, W>(x, w, b, y, in, out, o, 0);
}

// W: float, or uint16_t for a bfloat16 weight's bits.
template <typename W>
using KernelOf = void (*)(const float*, const W*, const float*, float*, int64_t, int64_t, int64_t, int64_t);
using Kernel = KernelOf<float>;

#define MX_VECTOR_KERNELS(NAME, TARGET, WIDTH)                                                          \
  typedef float NAME##Vec __attribute__((vector_size(WIDTH * sizeof(float))));                         \
  template <int M, typename W>                                                                           \
  __attribute__((target(TARGET))) void NAME(const float* x, const W* w, const float* b, float* y,      \
                                             int64_t in, int64_t out, int64_t o0, int64_t o1) {         \
    DotRows<NAME##Vec, WIDTH, M, W>(x, w, b, y, in, out, o0, o1);                                       \
  }

MX_VECTOR_KERNELS(Avx512, "avx512f", 16)
MX_VECTOR_KERNELS(Avx2, "avx2,fma", 8)
#undef MX_VECTOR_KERNELS

template <typename W, template <int, typename> class Pick>
KernelOf<W> ForRows(int64_t m) {
  switch (m) {
    case 1: return Pick<1, W>::kernel;
    case 2: return Pick<2, W>::kernel;
    case 3: return Pick<3, W>::kernel;
    case 4: return Pick<4, W>::kernel;
    case 5: return Pick<5, W>::kernel;
    case 6: return Pick<6, W>::kernel;
    case 7: return Pick<7, W>::kernel;
    case 8: return Pick<8, W>::kernel;
    case 9: return Pick<9, W>::kernel;
    case 10: return Pick<10, W>::kernel;
    case 11: return Pick<11, W>::kernel;
    case 12: return Pick<12, W>::kernel;
    case 13: return Pick<13, W>::kernel;
    case 14: return Pick<14, W>::kernel;
    case 15: return Pick<15, W>::kernel;
    case 16: return Pick<16, W>::kernel;
    default: return nullptr;
  }
}
template <int M, typename W>
struct PickAvx512 {
  static constexpr KernelOf<W> kernel = Avx512<M, W>;
};
template <int M, typename W>
struct PickAvx2 {
  static constexpr KernelOf<W> kernel = Avx2<M, W>;
};

enum class Isa { kNone, kAvx2, kAvx512 };

// The widest vectors this CPU runs, capped as ATen's own kernels are by ATEN_CPU_CAPABILITY (default: none,
// avx2: at most AVX2), so a run capped to a lower level computes as a machine of that level would; none (the
// caller uses its GEMM library) when MIXLORA_GEMM says so.
Isa CpuIsa() {
  static const Isa isa = [] {
    const char* env = std::getenv("MIXLORA_GEMM");
    if (env && (std::strcmp(env, "aten") == 0 || std::strcmp(env, "onednn") == 0)) return Isa::kNone;
    const char* cap = std::getenv("ATEN_CPU_CAPABILITY");
    const bool capDefault = cap && strcasecmp(cap, "default") == 0;
    const bool capAvx2 = cap && strcasecmp(cap, "avx2") == 0;
    if (capDefault) return Isa::kNone;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && !capAvx2) return Isa::kAvx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
    return Isa::kNone;
  }();
  return isa;
}
// The kernel for `rows` rows on this CPU, for weights of type W.
template <typename W = float>
KernelOf<W> KernelFor(int64_t rows) {
  if (rows < 1 || rows > kMaxRows || CpuIsa() == Isa::kNone)
    throw ArgError("small-row kernel: 1-16 rows, AVX2 needed");
  return CpuIsa() == Isa::kAvx512 ? ForRows<W, PickAvx512>(rows) : ForRows<W, PickAvx2>(rows);
}
}  // namespace

const char* SmallLinearIsa() {
  switch (CpuIsa()) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "off";
  }
}

bool SmallLinearApplies(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b) {
  if (CpuIsa() == Isa::kNone || !x.device().is_cpu() || x.scalar_type() != at::kFloat) return false;
  const bool narrow = w.scalar_type() == at::kBFloat16;
  if ((w.scalar_type() != at::kFloat && !narrow) || w.dim() != 2 || !w.is_contiguous() || w.device() != x.device())
    return false;
  if (x.dim() < 1 || x.size(-1) != w.size(1) || x.numel() == 0 || x.numel() / x.size(-1) > kMaxRows) return false;
  // A bfloat16 weight's bias may be bfloat16 too (widened below: a few hundred values).
  if (b && ((b->scalar_type() != at::kFloat && (!narrow || b->scalar_type() != at::kBFloat16)) || b->dim() != 1 ||
            b->size(0) != w.size(0) || !b->is_contiguous()))
    return false;
  return true;
}

void SmallDotRange(const float* x, int64_t rows, const float* w, const float* b, float* y, int64_t in, int64_t ldy,
                   int64_t o0, int64_t o1) {
  KernelFor(rows)(x, w, b, y, in, ldy, o0, o1);
}

// x [.., in] with at most kMaxRows rows -> [.., out]; no autograd (inference only).
at::Tensor SmallLinear(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b) {
  std::vector<int64_t> outShape(x.sizes().begin(), x.sizes().end());
  const int64_t in = w.size(1), out = w.size(0);
  outShape.back() = out;
  const at::Tensor x2 = x.reshape({-1, in}).contiguous();  // [m, in]
  const int64_t m = x2.size(0);
  at::Tensor y = at::empty({m, out}, x.options());  // [m, out]
  const at::Tensor bias = b && b->defined() ? b->to(at::kFloat) : at::Tensor();  // [out] float32
  const float* xp = x2.data_ptr<float>();
  const float* bp = bias.defined() ? bias.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  // At least 64 KiB of weight per task: smaller products are not worth waking another thread for.
  const int64_t grain = std::max<int64_t>(1, (int64_t{64} << 10) / (in * static_cast<int64_t>(w.element_size())));
  if (w.scalar_type() == at::kBFloat16) {
    const KernelOf<uint16_t> kernel = KernelFor<uint16_t>(m);
    const auto* wp = reinterpret_cast<const uint16_t*>(w.data_ptr<at::BFloat16>());
    at::parallel_for(0, out, grain, [&](int64_t o0, int64_t o1) { kernel(xp, wp, bp, yp, in, out, o0, o1); });
  } else {
    const Kernel kernel = KernelFor(m);
    const float* wp = w.data_ptr<float>();
    at::parallel_for(0, out, grain, [&](int64_t o0, int64_t o1) { kernel(xp, wp, bp, yp, in, out, o0, o1); });
  }
  return y.view(outShape);
}
}  // namespace mx

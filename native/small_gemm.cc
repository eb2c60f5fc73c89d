// x Wᵀ + b for a handful of rows (a decode step: one token per sequence), float32 on the CPU. A GEMM
// library's kernels are built for many rows: on 1-16 rows oneDNN spends 15-50 µs per call on setup and
// reaches a fraction of the memory bandwidth that such a product is bound by, and a serving step runs
// a few hundred of them (every projection, every adapter's A and B). Here each output element is one dot
// product of a weight row with an input row, the weight streamed once from memory for all rows, the
// output rows split between threads. Each element is computed the same way whatever the number of rows
// or threads, so a sequence decoded among others gets the same floats as decoded alone.
#include "common.h"

#include <ATen/Parallel.h>

#include <cstdlib>
#include <cstring>

namespace mx {
namespace {

constexpr int64_t kMaxRows = 16;

typedef float Floats16 __attribute__((vector_size(64)));
typedef float Floats8 __attribute__((vector_size(32)));
typedef float Floats4 __attribute__((vector_size(16)));

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
template <typename V, int Width, int MB, int R>
__attribute__((always_inline)) inline void DotRowBlock(const float* x, const float* w, const float* b, float* y,
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
    for (int r = 0; r < R; r++) std::memcpy(&wv[r], w + (o + r) * in + k, sizeof(V));  // unaligned load
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
    const float* wr = w + (o + r) * in;
#pragma GCC unroll 16
    for (int m = 0; m < MB; m++) {
      // The lanes summed pairwise (halves added in registers), then the tail: a fixed order for every
      // row count, block size and pass width.
      float s = SumLanes<Width>(acc[r][m]);
      for (int64_t j = k; j < in; j++) s += x[m * in + j] * wr[j];
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
template <typename V, int Width, int M, int R>
__attribute__((always_inline)) inline void DotPass(const float* x, const float* w, const float* b, float* y,
                                                   int64_t in, int64_t out, int64_t o, int64_t ahead) {
  constexpr int kBlocks = (M + MaxBlock(Width) - 1) / MaxBlock(Width);
  constexpr int kBig = (M + kBlocks - 1) / kBlocks;     // rows in the first blocks
  constexpr int kBigBlocks = M - (kBig - 1) * kBlocks;  // how many have kBig rows; the rest kBig - 1
#pragma GCC unroll 16
  for (int i = 0; i < kBlocks; i++) {
    const int64_t m0 = i < kBigBlocks ? i * kBig : kBigBlocks * kBig + (i - kBigBlocks) * (kBig - 1);
    if (i < kBigBlocks)
      DotRowBlock<V, Width, kBig, R>(x + m0 * in, w, b, y + m0 * out, in, out, o, ahead);
    else if constexpr (kBig > 1)
      DotRowBlock<V, Width, kBig - 1, R>(x + m0 * in, w, b, y + m0 * out, in, out, o, ahead);
  }
}

// All M rows of x against weight rows [o0, o1). The rows go in blocks of at most 8 (AVX-512) or 4 (AVX2),
// as even as possible: a block's accumulators stay in registers, and a pass's weight rows, read from
// memory for the first block, are still in L1 for the next (16 rows in one block would leave room for
// one weight row per pass, and 17 loads per 16 FMAs).
template <typename V, int Width, int M>
__attribute__((always_inline)) inline void DotRows(const float* x, const float* w, const float* b, float* y,
                                                   int64_t in, int64_t out, int64_t o0, int64_t o1) {
  constexpr int kBlocks = (M + MaxBlock(Width) - 1) / MaxBlock(Width);
  constexpr int R = RowsPerPass((M + kBlocks - 1) / kBlocks, Width == 16 ? 32 : 16);
  int64_t o = o0;
  for (; o + 2 * R <= o1; o += R) DotPass<V, Width, M, R>(x, w, b, y, in, out, o, R * in);
  for (; o + R <= o1; o += R) DotPass<V, Width, M, R>(x, w, b, y, in, out, o, 0);
  for (; o < o1; o++) DotPass<V, Width, M, 1>(x, w, b, y, in, out, o, 0);
}

using Kernel = void (*)(const float*, const float*, const float*, float*, int64_t, int64_t, int64_t, int64_t);

#define MX_VECTOR_KERNELS(NAME, TARGET, WIDTH)                                                          \
  typedef float NAME##Vec __attribute__((vector_size(WIDTH * sizeof(float))));                         \
  template <int M>                                                                                       \
  __attribute__((target(TARGET))) void NAME(const float* x, const float* w, const float* b, float* y,  \
                                             int64_t in, int64_t out, int64_t o0, int64_t o1) {         \
    DotRows<NAME##Vec, WIDTH, M>(x, w, b, y, in, out, o0, o1);                                          \
  }

MX_VECTOR_KERNELS(Avx512, "avx512f", 16)
MX_VECTOR_KERNELS(Avx2, "avx2,fma", 8)
#undef MX_VECTOR_KERNELS

template <template <int> class Pick>
Kernel ForRows(int64_t m) {
  switch (m) {
    case 1: return Pick<1>::kernel;
    case 2: return Pick<2>::kernel;
    case 3: return Pick<3>::kernel;
    case 4: return Pick<4>::kernel;
    case 5: return Pick<5>::kernel;
    case 6: return Pick<6>::kernel;
    case 7: return Pick<7>::kernel;
    case 8: return Pick<8>::kernel;
    case 9: return Pick<9>::kernel;
    case 10: return Pick<10>::kernel;
    case 11: return Pick<11>::kernel;
    case 12: return Pick<12>::kernel;
    case 13: return Pick<13>::kernel;
    case 14: return Pick<14>::kernel;
    case 15: return Pick<15>::kernel;
    case 16: return Pick<16>::kernel;
    default: return nullptr;
  }
}
template <int M>
struct PickAvx512 {
  static constexpr Kernel kernel = Avx512<M>;
};
template <int M>
struct PickAvx2 {
  static constexpr Kernel kernel = Avx2<M>;
};

enum class Isa { kNone, kAvx2, kAvx512 };

// The widest vectors this CPU runs; none (the caller uses its GEMM library) when MIXLORA_GEMM says so.
Isa CpuIsa() {
  static const Isa isa = [] {
    const char* env = std::getenv("MIXLORA_GEMM");
    if (env && (std::strcmp(env, "aten") == 0 || std::strcmp(env, "onednn") == 0)) return Isa::kNone;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return Isa::kAvx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
    return Isa::kNone;
  }();
  return isa;
}
// The kernel for `rows` rows on this CPU.
Kernel KernelFor(int64_t rows) {
  if (rows < 1 || rows > kMaxRows || CpuIsa() == Isa::kNone)
    throw ArgError("small-row kernel: 1-16 rows, AVX2 needed");
  return CpuIsa() == Isa::kAvx512 ? ForRows<PickAvx512>(rows) : ForRows<PickAvx2>(rows);
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
  if (w.scalar_type() != at::kFloat || w.dim() != 2 || !w.is_contiguous() || w.device() != x.device()) return false;
  if (x.dim() < 1 || x.size(-1) != w.size(1) || x.numel() == 0 || x.numel() / x.size(-1) > kMaxRows) return false;
  if (b && (b->scalar_type() != at::kFloat || b->dim() != 1 || b->size(0) != w.size(0) || !b->is_contiguous()))
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
  const Kernel kernel = KernelFor(m);
  const float* xp = x2.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  const float* bp = b && b->defined() ? b->data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  // At least 64 KiB of weight per task: smaller products are not worth waking another thread for.
  const int64_t grain = std::max<int64_t>(1, (int64_t{64} << 10) / (in * int64_t{sizeof(float)}));
  at::parallel_for(0, out, grain, [&](int64_t o0, int64_t o1) { kernel(xp, wp, bp, yp, in, out, o0, o1); });
  return y.view(outShape);
}
}  // namespace mx

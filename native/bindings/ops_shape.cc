// Views, indexing, joining and splitting.
#include "common.h"

namespace {
using namespace mx;

MX_FN(reshape) { return Put(info.Env(), Get(info[0]).reshape(IntList(info[1]))); }
MX_FN(view) { return Put(info.Env(), Get(info[0]).view(IntList(info[1]))); }
MX_FN(permute) { return Put(info.Env(), Get(info[0]).permute(IntList(info[1]))); }
MX_FN(transpose) { return Put(info.Env(), Get(info[0]).transpose(Int(info[1]), Int(info[2]))); }
// narrow(id, dim, start, length)
MX_FN(narrow) { return Put(info.Env(), Get(info[0]).narrow(Int(info[1]), Int(info[2]), Int(info[3]))); }
// slice(id, dim, start, end, step)
MX_FN(slice) { return Put(info.Env(), Get(info[0]).slice(Int(info[1]), Int(info[2]), Int(info[3]), Int(info[4]))); }
MX_FN(select) { return Put(info.Env(), Get(info[0]).select(Int(info[1]), Int(info[2]))); }
MX_FN(unsqueeze) { return Put(info.Env(), Get(info[0]).unsqueeze(Int(info[1]))); }
MX_FN(squeeze) {
  at::Tensor& t = Get(info[0]);
  return Put(info.Env(), info[1].IsUndefined() || info[1].IsNull() ? t.squeeze() : t.squeeze(Int(info[1])));
}
MX_FN(expand) { return Put(info.Env(), Get(info[0]).expand(IntList(info[1]))); }
MX_FN(flatten) { return Put(info.Env(), Get(info[0]).flatten(Int(info[1]), Int(info[2]))); }
MX_FN(tril) { return Put(info.Env(), Get(info[0]).tril(Int(info[1]))); }
MX_FN(triu) { return Put(info.Env(), Get(info[0]).triu(Int(info[1]))); }
// repeatInterleave(id, repeats, dim)
MX_FN(repeatInterleave) { return Put(info.Env(), Get(info[0]).repeat_interleave(Int(info[1]), Int(info[2]))); }
MX_FN(repeat) { return Put(info.Env(), Get(info[0]).repeat(IntList(info[1]))); }
MX_FN(flip) { return Put(info.Env(), Get(info[0]).flip(IntList(info[1]))); }
// asStrided(id, size, stride, offset): a view with explicit strides (rebuilding pickled tensors).
MX_FN(asStrided) { return Put(info.Env(), Get(info[0]).as_strided(IntList(info[1]), IntList(info[2]), Int(info[3]))); }

// ---- indexing ----
MX_FN(indexSelect) { return Put(info.Env(), Get(info[0]).index_select(Int(info[1]), Get(info[2]))); }
MX_FN(gather) { return Put(info.Env(), Get(info[0]).gather(Int(info[1]), Get(info[2]))); }
// scatterAdd(id, dim, index, src)
MX_FN(scatterAdd) { return Put(info.Env(), Get(info[0]).scatter_add(Int(info[1]), Get(info[2]), Get(info[3]))); }
// scatter(id, dim, index, src|value, srcIsValue)
MX_FN(scatter) {
  at::Tensor& t = Get(info[0]);
  if (Bool(info[4])) return Put(info.Env(), t.scatter(Int(info[1]), Get(info[2]), Num(info[3])));
  return Put(info.Env(), t.scatter(Int(info[1]), Get(info[2]), Get(info[3])));
}
// indexAdd(id, dim, index, src)
MX_FN(indexAdd) { return Put(info.Env(), Get(info[0]).index_add(Int(info[1]), Get(info[2]), Get(info[3]))); }
// indexCopy_(id, dim, index, src): in place, for caches.
MX_FN(indexCopy_) { Get(info[0]).index_copy_(Int(info[1]), Get(info[2]), Get(info[3])); return info.Env().Undefined(); }
MX_FN(maskedFill) {
  at::Tensor& t = Get(info[0]);
  return Put(info.Env(), t.masked_fill(Get(info[1]), Num(info[2])));
}
MX_FN(maskedSelect) { return Put(info.Env(), Get(info[0]).masked_select(Get(info[1]))); }
// where(cond, a, b, scalars): bit 0 of `scalars` says a is a number, bit 1 that b is (ids are numbers too).
MX_FN(where) {
  at::Tensor& cond = Get(info[0]);
  int64_t scalars = Int(info[3]);
  if (scalars == 3) throw ArgError("where(): at least one of a, b must be a tensor");
  if (scalars & 1) { at::Tensor& b = Get(info[2]); return Put(info.Env(), at::where(cond, at::scalar_tensor(Num(info[1]), b.options()), b)); }
  if (scalars & 2) { at::Tensor& a = Get(info[1]); return Put(info.Env(), at::where(cond, a, at::scalar_tensor(Num(info[2]), a.options()))); }
  return Put(info.Env(), at::where(cond, Get(info[1]), Get(info[2])));
}
MX_FN(nonzero) { return Put(info.Env(), Get(info[0]).nonzero()); }

// ---- joining / splitting ----
MX_FN(cat) { return Put(info.Env(), at::cat(GetList(info[0]), Int(info[1]))); }
MX_FN(stack) { return Put(info.Env(), at::stack(GetList(info[0]), Int(info[1]))); }
// split(id, sizes | size, dim)
MX_FN(split) {
  at::Tensor& t = Get(info[0]);
  int64_t dim = Int(info[2]);
  if (info[1].IsArray()) return PutList(info.Env(), t.split_with_sizes(IntList(info[1]), dim));
  return PutList(info.Env(), t.split(Int(info[1]), dim));
}
MX_FN(chunk) { return PutList(info.Env(), Get(info[0]).chunk(Int(info[1]), Int(info[2]))); }
MX_FN(unbind) { return PutList(info.Env(), Get(info[0]).unbind(Int(info[1]))); }

}  // namespace

namespace mx {
void RegisterShape(Napi::Env env, Napi::Object exports) {
  MX_EXPORT(exports, reshape);
  MX_EXPORT(exports, view);
  MX_EXPORT(exports, permute);
  MX_EXPORT(exports, transpose);
  MX_EXPORT(exports, narrow);
  MX_EXPORT(exports, slice);
  MX_EXPORT(exports, select);
  MX_EXPORT(exports, unsqueeze);
  MX_EXPORT(exports, squeeze);
  MX_EXPORT(exports, expand);
  MX_EXPORT(exports, flatten);
  MX_EXPORT(exports, tril);
  MX_EXPORT(exports, triu);
  MX_EXPORT(exports, repeatInterleave);
  MX_EXPORT(exports, repeat);
  MX_EXPORT(exports, flip);
  MX_EXPORT(exports, asStrided);
  MX_EXPORT(exports, indexSelect);
  MX_EXPORT(exports, gather);
  MX_EXPORT(exports, scatterAdd);
  MX_EXPORT(exports, scatter);
  MX_EXPORT(exports, indexAdd);
  MX_EXPORT(exports, indexCopy_);
  MX_EXPORT(exports, maskedFill);
  MX_EXPORT(exports, maskedSelect);
  MX_EXPORT(exports, where);
  MX_EXPORT(exports, nonzero);
  MX_EXPORT(exports, cat);
  MX_EXPORT(exports, stack);
  MX_EXPORT(exports, split);
  MX_EXPORT(exports, chunk);
  MX_EXPORT(exports, unbind);
}
}  // namespace mx

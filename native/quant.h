// Quantised frozen weights (quant.cc): quantize, dequantize, quantLinear.
#pragma once
#include <napi.h>

namespace mx {
void RegisterQuant(Napi::Env env, Napi::Object exports);
}  // namespace mx

// Entry point of the mixlora libtorch addon: one C++ function per op, no model logic.
#include "common.h"

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  mx::ConfigureHostAllocator();
  mx::RegisterCreate(env, exports);
  mx::RegisterShape(env, exports);
  mx::RegisterMath(env, exports);
  mx::RegisterNN(env, exports);
  mx::RegisterAutograd(env, exports);
  mx::RegisterFused(env, exports);
  mx::RegisterOptim(env, exports);
  mx::RegisterOptim8bit(env, exports);
  mx::RegisterQuant(env, exports);
  mx::RegisterRuntime(env, exports);
  mx::RegisterDistributed(env, exports);
  mx::RegisterLifeline(env, exports);
  mx::RegisterLowRank(env, exports);
  mx::RegisterProfile(env, exports);
  return exports;
}

NODE_API_MODULE(mixlora, Init)

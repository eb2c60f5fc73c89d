// Op-level profile of whatever runs between profileStart() and profileStop(): for every operator name
// that ATen's RecordFunction reports (forward ops, autograd nodes of the backward pass, the
// optimizer's ops), the calls and the *self* time (its own time minus that of the ops it called), so
// the times of nested ops add up to the time spent inside libtorch without counting anything twice.
// `mixlora bench --profile` groups the names into op families (src/train/profile.ts).
// RecordFunction's global-callback API is the same on libtorch 1.13 and 2.x (ATen/record_function.h).
#include "common.h"

#include <ATen/record_function.h>

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace {
using namespace mx;
using Clock = std::chrono::steady_clock;

struct OpTotals {
  int64_t calls = 0;
  int64_t selfNs = 0;
};

// Each thread's open ops: when one ends, its time is subtracted from its parent's self time.
struct Frame {
  Clock::time_point start;
  int64_t childNs = 0;
};

struct Profile {
  std::mutex mu;
  std::map<std::string, OpTotals> totals;
  std::optional<at::CallbackHandle> handle;
};
Profile& State() {
  static Profile p;
  return p;
}
thread_local std::vector<Frame> tStack;

std::unique_ptr<at::ObserverContext> OnStart(const at::RecordFunction&) {
  tStack.push_back({Clock::now(), 0});
  return nullptr;
}

void OnEnd(const at::RecordFunction& fn, at::ObserverContext*) {
  // An op that started before profileStart() has no frame here.
  if (tStack.empty()) return;
  Frame f = tStack.back();
  tStack.pop_back();
  int64_t total = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - f.start).count();
  if (!tStack.empty()) tStack.back().childNs += total;
  Profile& p = State();
  std::lock_guard<std::mutex> lock(p.mu);
  OpTotals& t = p.totals[fn.name()];
  t.calls += 1;
  t.selfNs += total - f.childNs;
}

// profileStart(): clears the totals and starts recording (an error if already recording).
MX_FN(profileStart) {
  Profile& p = State();
  if (p.handle) throw ArgError("profileStart: a profile is already being recorded");
  {
    std::lock_guard<std::mutex> lock(p.mu);
    p.totals.clear();
  }
  tStack.clear();
  p.handle = at::addGlobalCallback(at::RecordFunctionCallback(OnStart, OnEnd)
                                       .needsInputs(false)
                                       .scopes({at::RecordScope::FUNCTION, at::RecordScope::BACKWARD_FUNCTION}));
  return info.Env().Undefined();
}

// profileStop() -> {[opName]: [calls, selfMs]} of the ops since profileStart().
MX_FN(profileStop) {
  Profile& p = State();
  if (!p.handle) throw ArgError("profileStop: no profile is being recorded");
  at::removeCallback(*p.handle);
  p.handle.reset();
  tStack.clear();
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  std::lock_guard<std::mutex> lock(p.mu);
  for (const auto& [name, t] : p.totals) {
    Napi::Array row = Napi::Array::New(env, 2);
    row.Set(uint32_t(0), Napi::Number::New(env, double(t.calls)));
    row.Set(uint32_t(1), Napi::Number::New(env, double(t.selfNs) / 1e6));
    out.Set(name, row);
  }
  p.totals.clear();
  return out;
}
}  // namespace

namespace mx {
void RegisterProfile(Napi::Env env, Napi::Object exports) {
  MX_EXPORT(exports, profileStart);
  MX_EXPORT(exports, profileStop);
}
}  // namespace mx

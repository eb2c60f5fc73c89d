// A rank started by `mixlora launch` ends itself once its launcher is gone (a launcher killed with SIGKILL
// cannot end its ranks, which would train on as orphans). A thread polls getppid() every second: the
// rank's JavaScript may be blocked for minutes in a training step or a collective, where no timer of
// its own would run. When the parent changes (the rank was re-parented), it writes `message` to stderr
// and exits with status 1 at once (_exit: no JavaScript runs; checkpoints are written atomically).
#include "common.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

namespace {
using namespace mx;

std::atomic<bool> watching{false};

[[noreturn]] void Leave(const std::string& message) {
  if (write(STDERR_FILENO, message.data(), message.size()) < 0) {
    // nobody reads our stderr any more (it was the launcher's pipe): exit all the same
  }
  _exit(1);
}

// watchParent(pid, message): from now on, exit with `message` when the parent is no longer `pid`.
MX_FN(watchParent) {
  auto parent = static_cast<pid_t>(Int(info[0]));
  std::string message = info[1].As<Napi::String>().Utf8Value();
  if (parent <= 1) throw ArgError("watchParent: pid must be above 1");
  if (watching.exchange(true)) throw ArgError("watchParent: already watching");
  if (getppid() != parent) Leave(message);
  std::thread([parent, message] {
    for (;;) {
      std::this_thread::sleep_for(std::chrono::seconds(1));
      if (getppid() != parent) Leave(message);
    }
  }).detach();
  return info.Env().Undefined();
}

}  // namespace

namespace mx {
void RegisterLifeline(Napi::Env env, Napi::Object exports) { MX_EXPORT(exports, watchParent); }
}  // namespace mx

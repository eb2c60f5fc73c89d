// Creating tensors, reading them back, and their metadata.
#include "common.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace {
using namespace mx;

// fromBuffer(typedArrayOrArrayBuffer, dtype, shape, device): copies the bytes into a new tensor.
MX_FN(fromBuffer) {
  Napi::Value src = info[0];
  const uint8_t* data = nullptr;
  size_t len = 0;
  if (src.IsTypedArray()) {
    auto ta = src.As<Napi::TypedArray>();
    auto ab = ta.ArrayBuffer();
    data = static_cast<const uint8_t*>(ab.Data()) + ta.ByteOffset();
    len = ta.ByteLength();
  } else if (src.IsArrayBuffer()) {
    auto ab = src.As<Napi::ArrayBuffer>();
    data = static_cast<const uint8_t*>(ab.Data());
    len = ab.ByteLength();
  } else {
    throw ArgError("fromBuffer expects a typed array or ArrayBuffer");
  }
  at::ScalarType dtype = DType(info[1]);
  auto shape = IntList(info[2]);
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(dtype));
  size_t want = t.numel() * t.element_size();
  if (want != len) {
    throw ArgError("buffer holds " + std::to_string(len) + " bytes but shape " + c10::str(t.sizes()) +
                   " of " + c10::toString(dtype) + " needs " + std::to_string(want));
  }
  if (len) std::memcpy(t.data_ptr(), data, len);
  at::Device dev = Device(info[3]);
  if (!dev.is_cpu()) t = t.to(dev);
  return Put(info.Env(), t);
}

// fromFile(path, offset, nbytes, dtype, shape): reads the bytes straight into the tensor's own buffer,
// so large checkpoints are never held twice in memory.
MX_FN(fromFile) {
  std::string path = info[0].As<Napi::String>().Utf8Value();
  int64_t offset = Int(info[1]);
  int64_t nbytes = Int(info[2]);
  at::ScalarType dtype = DType(info[3]);
  auto shape = IntList(info[4]);
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(dtype));
  if (static_cast<int64_t>(t.numel() * t.element_size()) != nbytes) {
    throw ArgError(path + ": tensor of shape " + c10::str(t.sizes()) + " and " + c10::toString(dtype) +
                   " needs " + std::to_string(t.numel() * t.element_size()) + " bytes, not " + std::to_string(nbytes));
  }
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(path + ": " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0 || offset < 0 || offset + nbytes > st.st_size) {
    ::close(fd);
    throw std::runtime_error(path + ": tensor bytes [" + std::to_string(offset) + ", " + std::to_string(offset + nbytes) +
                             ") lie outside the file (" + std::to_string(st.st_size) + " bytes)");
  }
  char* dst = static_cast<char*>(t.data_ptr());
  int64_t done = 0;
  while (done < nbytes) {
    ssize_t n = ::pread(fd, dst + done, static_cast<size_t>(nbytes - done), offset + done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      throw std::runtime_error(path + ": read failed at byte " + std::to_string(offset + done) + (n < 0 ? std::string(": ") + std::strerror(errno) : ": file truncated"));
    }
    done += n;
  }
  ::close(fd);
  return Put(info.Env(), t);
}

MX_FN(empty) { return Put(info.Env(), at::empty(IntList(info[0]), Options(info[1], info[2]))); }
MX_FN(zeros) { return Put(info.Env(), at::zeros(IntList(info[0]), Options(info[1], info[2]))); }
MX_FN(ones) { return Put(info.Env(), at::ones(IntList(info[0]), Options(info[1], info[2]))); }
// full(shape, value, dtype, device)
MX_FN(full) { return Put(info.Env(), at::full(IntList(info[0]), Num(info[1]), Options(info[2], info[3]))); }
// arange(start, end, step, dtype, device)
MX_FN(arange) { return Put(info.Env(), at::arange(Num(info[0]), Num(info[1]), Num(info[2]), Options(info[3], info[4]))); }
MX_FN(rand) { return Put(info.Env(), at::rand(IntList(info[0]), Options(info[1], info[2]))); }
MX_FN(randn) { return Put(info.Env(), at::randn(IntList(info[0]), Options(info[1], info[2]))); }
// randint(low, high, shape, dtype, device)
MX_FN(randint) { return Put(info.Env(), at::randint(Int(info[0]), Int(info[1]), IntList(info[2]), Options(info[3], info[4]))); }
MX_FN(eye) { return Put(info.Env(), at::eye(Int(info[0]), Options(info[1], info[2]))); }

// In-place initialisers used by adapter init (kaiming-uniform, normal).
MX_FN(uniform_) { Get(info[0]).uniform_(Num(info[1]), Num(info[2])); return info.Env().Undefined(); }
MX_FN(normal_) { Get(info[0]).normal_(Num(info[1]), Num(info[2])); return info.Env().Undefined(); }

// toBuffer(id): the elements as a new ArrayBuffer (row-major, native byte order).
MX_FN(toBuffer) {
  at::Tensor t = Get(info[0]).detach().to(at::kCPU).contiguous();
  size_t n = t.numel() * t.element_size();
  auto ab = Napi::ArrayBuffer::New(info.Env(), n);
  if (n) std::memcpy(ab.Data(), t.data_ptr(), n);
  return ab;
}

MX_FN(item) {
  at::Tensor& t = Get(info[0]);
  if (t.numel() != 1) throw ArgError("item() needs a tensor with one element, got shape " + c10::str(t.sizes()));
  return Napi::Number::New(info.Env(), t.item().toDouble());
}

// to(id, dtype | null, device | null)
MX_FN(to) {
  at::Tensor& t = Get(info[0]);
  at::ScalarType dtype = info[1].IsNull() || info[1].IsUndefined() ? t.scalar_type() : DType(info[1]);
  at::Device dev = info[2].IsNull() || info[2].IsUndefined() ? t.device() : Device(info[2]);
  return Put(info.Env(), t.to(dev, dtype));
}

MX_FN(shape) {
  auto sizes = Get(info[0]).sizes();
  auto arr = Napi::Array::New(info.Env(), sizes.size());
  for (size_t i = 0; i < sizes.size(); i++) arr.Set(static_cast<uint32_t>(i), Napi::Number::New(info.Env(), static_cast<double>(sizes[i])));
  return arr;
}
MX_FN(dtype) { return Napi::Number::New(info.Env(), DTypeCode(Get(info[0]).scalar_type())); }
MX_FN(device) { return Napi::String::New(info.Env(), Get(info[0]).device().str()); }
MX_FN(numel) { return Napi::Number::New(info.Env(), static_cast<double>(Get(info[0]).numel())); }
MX_FN(isContiguous) { return Napi::Boolean::New(info.Env(), Get(info[0]).is_contiguous()); }
MX_FN(requiresGrad) { return Napi::Boolean::New(info.Env(), Get(info[0]).requires_grad()); }
}  // namespace

namespace mx {
void RegisterCreate(Napi::Env env, Napi::Object exports) {
  MX_EXPORT(exports, fromBuffer);
  MX_EXPORT(exports, fromFile);
  MX_EXPORT(exports, empty);
  MX_EXPORT(exports, zeros);
  MX_EXPORT(exports, ones);
  MX_EXPORT(exports, full);
  MX_EXPORT(exports, arange);
  MX_EXPORT(exports, rand);
  MX_EXPORT(exports, randn);
  MX_EXPORT(exports, randint);
  MX_EXPORT(exports, eye);
  MX_EXPORT(exports, uniform_);
  MX_EXPORT(exports, normal_);
  MX_EXPORT(exports, toBuffer);
  MX_EXPORT(exports, item);
  MX_EXPORT(exports, to);
  MX_EXPORT(exports, shape);
  MX_EXPORT(exports, dtype);
  MX_EXPORT(exports, device);
  MX_EXPORT(exports, numel);
  MX_EXPORT(exports, isContiguous);
  MX_EXPORT(exports, requiresGrad);
}
}  // namespace mx

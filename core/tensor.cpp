#include "core/tensor.h"

#include <cstdlib>
#include <cstring>

namespace deeptrain {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: case DType::i32: return 4;
    case DType::f64: case DType::i64: return 8;
    case DType::f16: case DType::bf16: return 2;
    case DType::u8: return 1;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
    case DType::u8: return "u8";
  }
  return "?";
}

const char* layout_name(Layout l) {
  switch (l) {
    case Layout::plain: return "plain";
    case Layout::nChw8c: return "nChw8c";
    case Layout::nChw16c: return "nChw16c";
  }
  return "?";
}

int layout_block(Layout l) {
  switch (l) {
    case Layout::plain: return 1;
    case Layout::nChw8c: return 8;
    case Layout::nChw16c: return 16;
  }
  fail("layout_block: unknown layout {}", int(l));
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int64_t d : dims_) n *= d;
  return n;
}

std::string Shape::str() const {
  std::string s = "(";
  for (size_t i = 0; i < dims_.size(); ++i) s += (i ? ", " : "") + std::to_string(dims_[i]);
  return s + ")";
}

Tensor Tensor::empty(Shape shape, DType dtype, Device device) {
  DT_CHECK(device == Device::cpu, "Tensor::empty on a device needs the device backend");
  for (int64_t d : shape.dims()) DT_CHECK(d >= 0, "negative dimension in {}", shape.str());
  Tensor t;
  size_t bytes = static_cast<size_t>(shape.numel()) * dtype_size(dtype);
  size_t padded = (bytes + 63) / 64 * 64;
  void* p = padded ? std::aligned_alloc(64, padded) : nullptr;
  if (padded && !p) fail("out of memory allocating {} bytes for a tensor {}", bytes, shape.str());
  t.storage_ = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  t.data_ = p;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  return t;
}

Tensor Tensor::zeros(Shape shape, DType dtype, Device device) {
  Tensor t = empty(std::move(shape), dtype, device);
  t.fill_zero();
  return t;
}

Tensor Tensor::view(void* data, Shape shape, DType dtype, Device device,
                    std::shared_ptr<void> owner) {
  Tensor t;
  t.storage_ = std::move(owner);
  t.data_ = data;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  return t;
}

Tensor Tensor::reshape(Shape s) const {
  DT_CHECK(s.numel() == numel(), "reshape {} -> {}", shape_.str(), s.str());
  DT_CHECK(layout_ == Layout::plain, "reshape of a {} tensor", layout_name(layout_));
  Tensor t = *this;
  t.shape_ = std::move(s);
  return t;
}

Tensor Tensor::slice_flat(int64_t begin, Shape s) const {
  DT_CHECK(begin >= 0 && begin + s.numel() <= numel(), "slice [{}, +{}) of {}", begin, s.numel(),
           shape_.str());
  Tensor t = *this;
  t.data_ = static_cast<char*>(data_) + begin * static_cast<int64_t>(dtype_size(dtype_));
  t.shape_ = std::move(s);
  t.layout_ = Layout::plain;
  return t;
}

void Tensor::fill_zero() {
  DT_CHECK(device_ == Device::cpu, "fill_zero on a device tensor");
  if (nbytes()) std::memset(data_, 0, nbytes());
}

void Tensor::copy_from(const Tensor& src) {
  DT_CHECK(src.dtype_ == dtype_ && src.numel() == numel(), "copy {} {} -> {} {}",
           dtype_name(src.dtype_), src.shape_.str(), dtype_name(dtype_), shape_.str());
  if (nbytes()) std::memcpy(data_, src.data_, nbytes());
  layout_ = src.layout_;
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_, device_);
  t.copy_from(*this);
  return t;
}

template <class To, class From>
static void convert(To* d, const From* s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] = static_cast<To>(s[i]);
}

Tensor Tensor::to(DType t) const {
  if (t == dtype_) return clone();
  Tensor out = empty(shape_, t, device_);
  int64_t n = numel();
  if (dtype_ == DType::f32 && t == DType::f64) convert(out.data<double>(), data<float>(), n);
  else if (dtype_ == DType::f64 && t == DType::f32) convert(out.data<float>(), data<double>(), n);
  else if (dtype_ == DType::i64 && t == DType::i32) convert(out.data<int32_t>(), data<int64_t>(), n);
  else if (dtype_ == DType::i32 && t == DType::i64) convert(out.data<int64_t>(), data<int32_t>(), n);
  else if (dtype_ == DType::u8 && t == DType::f32) convert(out.data<float>(), data<uint8_t>(), n);
  else fail("no conversion {} -> {}", dtype_name(dtype_), dtype_name(t));
  out.layout_ = layout_;
  return out;
}

}  // namespace deeptrain

#pragma once
// A tensor is a typed view (shape, dtype, device, layout) into shared storage.
// Views of the flat parameter and gradient buffers share that storage; nothing is copied.
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"

namespace deeptrain {

enum class DType : uint8_t { f32, f64, f16, bf16, i32, i64, u8 };
enum class Device : uint8_t { cpu, cuda };
// Memory layout of a 4-d activation. Backends with blocked kernels keep activations in
// nChw8c/nChw16c between layers; everything else (and every parameter) is plain row-major.
enum class Layout : uint8_t { plain, nChw8c, nChw16c };

size_t dtype_size(DType t);
const char* dtype_name(DType t);
const char* layout_name(Layout l);
// The channel block B of a 4-d activation's layout: element (n, c, s) of an (N, C, S = H*W)
// activation lives at ((n * C/B + c/B) * S + s) * B + c % B. Plain is B = 1.
int layout_block(Layout l);

template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<double>() { return DType::f64; }
template <> constexpr DType dtype_of<int32_t>() { return DType::i32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::i64; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::u8; }

class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<int64_t> d) : dims_(d) {}
  explicit Shape(std::vector<int64_t> d) : dims_(std::move(d)) {}
  int rank() const { return static_cast<int>(dims_.size()); }
  int64_t operator[](int i) const { return dims_.at(i < 0 ? i + rank() : i); }
  int64_t numel() const;
  const std::vector<int64_t>& dims() const { return dims_; }
  bool operator==(const Shape&) const = default;
  std::string str() const;  // "(100, 1, 28, 28)"
 private:
  std::vector<int64_t> dims_;
};

class Tensor {
 public:
  Tensor() = default;
  // Owning, uninitialised (zeros() zero-fills). Storage is 64-byte aligned.
  static Tensor empty(Shape shape, DType dtype, Device device = Device::cpu);
  static Tensor zeros(Shape shape, DType dtype, Device device = Device::cpu);
  // A view of memory owned elsewhere; `owner` (optional) keeps it alive.
  static Tensor view(void* data, Shape shape, DType dtype, Device device = Device::cpu,
                     std::shared_ptr<void> owner = nullptr);

  bool defined() const { return data_ != nullptr || shape_.numel() == 0; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_[i]; }
  int64_t numel() const { return shape_.numel(); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  Layout layout() const { return layout_; }
  void set_layout(Layout l) { layout_ = l; }

  void* raw() const { return data_; }
  template <class T> T* data() const {
    DT_CHECK(dtype_ == dtype_of<T>(), "tensor is {}, accessed as {}", dtype_name(dtype_),
             dtype_name(dtype_of<T>()));
    DT_CHECK(device_ == Device::cpu, "host access to a device tensor");
    return static_cast<T*>(data_);
  }
  // Same storage, another shape of equal element count (plain layout only).
  Tensor reshape(Shape s) const;
  // Elements [begin, begin + shape.numel()) of a contiguous tensor, as a view.
  Tensor slice_flat(int64_t begin, Shape s) const;
  void fill_zero();
  void copy_from(const Tensor& src);  // same dtype and numel
  Tensor clone() const;
  Tensor to(DType t) const;           // a converted copy (f32 <-> f64 etc.)

 private:
  std::shared_ptr<void> storage_;
  void* data_ = nullptr;
  Shape shape_;
  DType dtype_ = DType::f32;
  Device device_ = Device::cpu;
  Layout layout_ = Layout::plain;
};

}  // namespace deeptrain

#pragma once
// The CPU ops' dtype dispatch: one template body, instantiated for f32 and f64.
#include "core/error.h"
#include "core/tensor.h"

namespace deeptrain {

// Calls f.template operator()<T>() for t's dtype (T = float or double), t in host memory;
// any other dtype or a device tensor is an error naming `op`.
template <class F>
void dispatch_host_float(const Tensor& t, const char* op, F&& f) {
  DT_CHECK(t.device() == Device::cpu, "{}: needs host tensors", op);
  if (t.dtype() == DType::f32) f.template operator()<float>();
  else if (t.dtype() == DType::f64) f.template operator()<double>();
  else fail("{}: {} tensors are not supported", op, dtype_name(t.dtype()));
}

}  // namespace deeptrain

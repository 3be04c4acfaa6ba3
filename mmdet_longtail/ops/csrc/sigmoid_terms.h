// Vector building blocks shared by the sigmoid-loss CPU kernels; the same
// math as mmdet_longtail/models/losses/sigmoid_terms.py.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <cstdint>

namespace mmdet_longtail {

using Vec = at::vec::Vectorized<float>;

// log(1 + e) for e in [0, 1]: 2 atanh(t), t = e / (2 + e) <= 1/3, by the
// series 2 t (1 + t^2/3 + ... + t^12/13), accurate to float32 rounding
inline Vec log1p_of_unit(const Vec& e) {
  const Vec t = e / (Vec(2.f) + e);
  const Vec t2 = t * t;
  Vec poly = at::vec::fmadd(t2, Vec(1.f / 13), Vec(1.f / 11));
  poly = at::vec::fmadd(t2, poly, Vec(1.f / 9));
  poly = at::vec::fmadd(t2, poly, Vec(1.f / 7));
  poly = at::vec::fmadd(t2, poly, Vec(1.f / 5));
  poly = at::vec::fmadd(t2, poly, Vec(1.f / 3));
  poly = at::vec::fmadd(t2, poly, Vec(1.f));
  return (t + t) * poly;
}

// softplus(z) = max(z, 0) + log1p(e) and sigmoid(z) from e = exp(-|z|)
// (ATen's exp_u20: at most 20 ulp, ~1e-6 relative, a fraction of the cost
// of the 1-ulp exp)
inline void softplus_and_sigmoid(const Vec& z, Vec& softplus, Vec& sigmoid) {
  const Vec e = z.abs().neg().exp_u20();
  softplus = at::vec::maximum(z, Vec(0.f)) + log1p_of_unit(e);
  const Vec sigmoid_abs = Vec(1.f) / (Vec(1.f) + e);
  sigmoid = Vec::blendv(e * sigmoid_abs, sigmoid_abs, z >= Vec(0.f));
}

// all ones in the lane of `column` within the vector starting at `start`
inline Vec lane_mask(int64_t start, int64_t column) {
  return Vec::arange(static_cast<float>(start), 1.f) ==
         Vec(static_cast<float>(column));
}

inline float horizontal_sum(const Vec& v) {
  float lanes[Vec::size()];
  v.store(lanes);
  float sum = 0.f;
  for (int64_t k = 0; k < Vec::size(); ++k) sum += lanes[k];
  return sum;
}

}  // namespace mmdet_longtail

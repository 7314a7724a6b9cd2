// Last-line argument checks of the C++ ops. The Python wrappers validate first
// with friendlier messages; these make a direct torch.ops call safe too.
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>
#include <string>

namespace facegeom {

inline void check_float(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, name,
                   " must be float32 or float64, got ", t.scalar_type());
}

inline void check_same(const at::Tensor& t, const at::Tensor& ref, const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), name, " must have dtype ",
                   ref.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), name, " must be on ", ref.device(), ", got ",
              t.device());
}

inline void check_shape(const at::Tensor& t, at::IntArrayRef expected, const char* name) {
  TORCH_CHECK_VALUE(t.sizes() == expected, name, " must have shape ", expected, ", got ",
                    t.sizes());
}

// rast stores id + 1 as a float: float32 holds integers exactly up to 2**24.
constexpr int64_t kMaxTrianglesFloat32 = (int64_t{1} << 24) - 1;

// The triangles of rasterize / interpolate (int32 [F, 3] on like's device,
// indices in [0, num_vertices)); a float32 rast limits F.
inline void check_rast_tri(const at::Tensor& tri, const at::Tensor& like, int64_t num_vertices) {
  TORCH_CHECK_TYPE(tri.scalar_type() == at::kInt, "tri must be int32, got ", tri.scalar_type());
  TORCH_CHECK(tri.device() == like.device(), "tri must be on ", like.device(), ", got ",
              tri.device());
  TORCH_CHECK_VALUE(tri.dim() == 2 && tri.size(1) == 3, "tri must have shape [F, 3], got ",
                    tri.sizes());
  TORCH_CHECK_VALUE(tri.size(0) < std::numeric_limits<int32_t>::max(),
                    "tri has too many triangles (", tri.size(0), ")");
  if (like.scalar_type() == at::kFloat) {
    TORCH_CHECK_VALUE(tri.size(0) <= kMaxTrianglesFloat32, "tri has ", tri.size(0),
                      " triangles; float32 rast holds ids exactly only up to ",
                      kMaxTrianglesFloat32);
  }
  if (tri.numel() > 0) {
    const auto [low, high] = at::aminmax(tri);
    const int64_t lo = low.item<int64_t>(), hi = high.item<int64_t>();
    TORCH_CHECK_INDEX(lo >= 0 && hi < num_vertices, "tri holds vertex indices in [", lo, ", ", hi,
                      "]; they must lie in [0, ", num_vertices, ")");
  }
}

}  // namespace facegeom

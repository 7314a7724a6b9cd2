// Shared by the C++ (CPU) and CUDA back ends: no torch headers here, only plain
// types and FG_HD inline math, so nvcc can compile every kernel without torch.
#pragma once

#include <cstdint>
#include <cmath>

#if defined(__CUDACC__)
#define FG_HD __host__ __device__ __forceinline__
#else
#define FG_HD inline
#endif

namespace facegeom {

#if !defined(__CUDACC__)
// Host builds pick the float/double overloads from std; nvcc provides them globally.
using std::cos;
using std::sin;
using std::sqrt;
#endif

// Affine transforms are row-major 3x4 [R | t] (the top rows of a 4x4).
// out = M * [x; 1]
template <typename T>
FG_HD void affine_apply(const T* m, const T* x, T* out) {
  for (int r = 0; r < 3; ++r) {
    out[r] = m[4 * r] * x[0] + m[4 * r + 1] * x[1] + m[4 * r + 2] * x[2] + m[4 * r + 3];
  }
}

// C = A * B for 3x4 affine matrices with an implied [0 0 0 1] bottom row.
template <typename T>
FG_HD void affine_compose(const T* a, const T* b, T* c) {
  for (int r = 0; r < 3; ++r) {
    for (int col = 0; col < 4; ++col) {
      T acc = a[4 * r] * b[col] + a[4 * r + 1] * b[4 + col] + a[4 * r + 2] * b[8 + col];
      if (col == 3) acc += a[4 * r + 3];
      c[4 * r + col] = acc;
    }
  }
}

}  // namespace facegeom

#include "cpu/shading_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace facegeom {
namespace cpu {
namespace {

constexpr int64_t kPointGrain = 2048;

int64_t num_chunks(int64_t n, int64_t chunk) { return (n + chunk - 1) / chunk; }

// Sum over the corners of vertex `vertex` of values [3 * entry .. 3 * entry + 3)
// of `per_corner` ([F, 3, 3]) or, with per_face, of values [3 * face ..) ([F, 3]).
template <typename T, bool per_face>
void gather_corners(int64_t vertex, const int64_t* offsets, const int64_t* entries, const T* values,
                    T* sum) {
  sum[0] = sum[1] = sum[2] = T(0);
  for (int64_t e = offsets[vertex]; e < offsets[vertex + 1]; ++e) {
    const T* x = values + 3 * (per_face ? entries[e] / 3 : entries[e]);
    sum[0] += x[0];
    sum[1] += x[1];
    sum[2] += x[2];
  }
}

}  // namespace

template <typename I>
int64_t build_vertex_corners(int64_t num_vertices, int64_t num_faces, const I* faces,
                             int64_t* offsets, int64_t* entries) {
  const int64_t corners = 3 * num_faces;
  std::fill(offsets, offsets + num_vertices + 1, int64_t(0));
  for (int64_t i = 0; i < corners; ++i) {
    const int64_t v = static_cast<int64_t>(faces[i]);
    if (v < 0 || v >= num_vertices) return i;
    ++offsets[v + 1];
  }
  for (int64_t v = 0; v < num_vertices; ++v) offsets[v + 1] += offsets[v];
  std::vector<int64_t> next(offsets, offsets + num_vertices);
  for (int64_t i = 0; i < corners; ++i) entries[next[static_cast<int64_t>(faces[i])]++] = i;
  return -1;
}

// Both passes run one batch element at a time so that the per-face scratch
// ([F, 3] or [F, 9]) stays in cache between the face pass and the vertex pass.
template <typename T, typename I>
void vertex_normals_forward(int64_t batch, int64_t num_vertices, int64_t num_faces,
                            const T* vertices, const I* faces, const int64_t* offsets,
                            const int64_t* entries, T* face_normals, T* out, T* inv_len) {
  for (int64_t b = 0; b < batch; ++b) {
    const T* v = vertices + 3 * num_vertices * b;
    at::parallel_for(0, num_faces, kPointGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const I* f = faces + 3 * i;
        shading::face_normal(v + 3 * int64_t(f[0]), v + 3 * int64_t(f[1]),
                              v + 3 * int64_t(f[2]), face_normals + 3 * i);
      }
    });
    at::parallel_for(0, num_vertices, kPointGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        T sum[3];
        gather_corners<T, true>(i, offsets, entries, face_normals, sum);
        const int64_t row = num_vertices * b + i;
        inv_len[row] = shading::normalize3_scaled(sum, out + 3 * row);
      }
    });
  }
}

template <typename T, typename I>
void vertex_normals_backward(int64_t batch, int64_t num_vertices, int64_t num_faces,
                             const T* vertices, const I* faces, const int64_t* offsets,
                             const int64_t* entries, const T* normals, const T* inv_len,
                             const T* grad_out, T* face_scratch, T* vertex_scratch,
                             T* grad_vertices) {
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t row0 = num_vertices * b;
    const T* v = vertices + 3 * row0;
    // 1. Gradient of each vertex's unnormalised sum (vertex_scratch, [V, 3]).
    at::parallel_for(0, num_vertices, kPointGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t row = row0 + i;
        shading::normalize3_backward(normals + 3 * row, inv_len[row], grad_out + 3 * row,
                                      vertex_scratch + 3 * i);
      }
    });
    // 2. Per face: its normal's gradient is the sum over its three vertices;
    //    face_scratch receives the three corners' position gradients [F, 3, 3].
    at::parallel_for(0, num_faces, kPointGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const I* f = faces + 3 * i;
        const int64_t i0 = f[0], i1 = f[1], i2 = f[2];
        const T* g = vertex_scratch;
        const T grad_n[3] = {g[3 * i0] + g[3 * i1] + g[3 * i2],
                             g[3 * i0 + 1] + g[3 * i1 + 1] + g[3 * i2 + 1],
                             g[3 * i0 + 2] + g[3 * i1 + 2] + g[3 * i2 + 2]};
        T* corner = face_scratch + 9 * i;
        shading::face_normal_backward(v + 3 * i0, v + 3 * i1, v + 3 * i2, grad_n, corner,
                                       corner + 3, corner + 6);
      }
    });
    // 3. Per vertex: gather its corners' gradients (no scatter, fixed order).
    at::parallel_for(0, num_vertices, kPointGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        gather_corners<T, false>(i, offsets, entries, face_scratch, grad_vertices + 3 * (row0 + i));
      }
    });
  }
}

template <typename T>
void sh_basis_forward(int64_t n, const shading::ShTable<T>& table, const T* normals, T* basis) {
  at::parallel_for(0, n, kPointGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) shading::sh_basis_forward(table, normals + 3 * i, basis + 9 * i);
  });
}

template <typename T>
void sh_basis_backward(int64_t n, const shading::ShTable<T>& table, const T* normals, const T* grad_basis,
                       T* grad_normals) {
  at::parallel_for(0, n, kPointGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      shading::sh_basis_backward(table, normals + 3 * i, grad_basis + 9 * i, grad_normals + 3 * i);
    }
  });
}

template <typename T>
void sh_shading_forward(int64_t batch, int64_t num_points, const shading::ShTable<T>& table,
                        const T* normals, const T* albedo, const T* coeffs, T* out) {
  at::parallel_for(0, batch * num_points, kPointGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T* c = coeffs + 27 * (i / num_points);
      shading::sh_shade_forward(table, normals + 3 * i, albedo + 3 * i, c, out + 3 * i);
    }
  });
}

template <typename T>
void sh_shading_backward(int64_t batch, int64_t num_points, const shading::ShTable<T>& table,
                         const T* normals, const T* albedo, const T* coeffs, const T* grad_out,
                         T* grad_normals, T* grad_albedo, T* grad_coeffs) {
  const int64_t chunks = num_chunks(num_points, kShadingChunk);
  std::vector<T> partial(grad_coeffs != nullptr ? batch * chunks * 27 : 0);
  at::parallel_for(0, batch * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t b = unit / chunks;
      const int64_t p0 = (unit - b * chunks) * kShadingChunk;
      const int64_t p1 = std::min(num_points, p0 + kShadingChunk);
      const T* c = coeffs + 27 * b;
      // A local accumulator: it cannot alias the outputs, so it stays in registers.
      T acc[27] = {};
      T* gc = grad_coeffs != nullptr ? acc : nullptr;
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t i = b * num_points + p;
        shading::sh_shade_backward(table, normals + 3 * i, albedo + 3 * i, c, grad_out + 3 * i,
                                    grad_normals != nullptr ? grad_normals + 3 * i : nullptr,
                                    grad_albedo != nullptr ? grad_albedo + 3 * i : nullptr, gc);
      }
      if (gc != nullptr) std::copy(acc, acc + 27, partial.data() + 27 * unit);
    }
  });
  if (grad_coeffs != nullptr) {
    std::fill(grad_coeffs, grad_coeffs + 27 * batch, T(0));
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t chunk = 0; chunk < chunks; ++chunk)
        for (int k = 0; k < 27; ++k) grad_coeffs[27 * b + k] += partial[27 * (b * chunks + chunk) + k];
  }
}

template <typename T>
void blinn_phong_forward(int64_t batch, int64_t num_points, const T* normals, const T* points,
                         const T* light, const T* camera, const T* albedo,
                         int64_t albedo_channels, const T* shininess, T* out) {
  at::parallel_for(0, batch * num_points, kPointGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / num_points;
      shading::blinn_phong_point(normals + 3 * i, points + 3 * i, light + 3 * b, camera + 3 * b,
                                  albedo + albedo_channels * i, albedo_channels, shininess[b],
                                  out + 3 * i);
    }
  });
}

template <typename T>
void blinn_phong_backward(int64_t batch, int64_t num_points, const T* normals, const T* points,
                          const T* light, const T* camera, const T* albedo,
                          int64_t albedo_channels, const T* shininess, const T* grad_out,
                          T* grad_normals, T* grad_points, T* grad_light, T* grad_camera,
                          T* grad_albedo, T* grad_shininess) {
  // Per chunk: light (3), camera (3) and shininess (1) gradient partials.
  constexpr int kSums = 7;
  const int64_t chunks = num_chunks(num_points, kShadingChunk);
  std::vector<T> partial(batch * chunks * kSums, T(0));
  at::parallel_for(0, batch * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t b = unit / chunks;
      const int64_t p0 = (unit - b * chunks) * kShadingChunk;
      const int64_t p1 = std::min(num_points, p0 + kShadingChunk);
      T sums[kSums] = {T(0), T(0), T(0), T(0), T(0), T(0), T(0)};
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t i = b * num_points + p;
        const T* g = grad_out + 3 * i;
        const T* a = albedo + albedo_channels * i;
        T grad_lobe;
        if (albedo_channels == 3) {
          grad_lobe = g[0] * a[0] + g[1] * a[1] + g[2] * a[2];
        } else {
          grad_lobe = (g[0] + g[1] + g[2]) * a[0];
        }
        T gn[3], gp[3], gl[3], gc[3], gk;
        const T lobe = shading::blinn_phong_lobe_backward(normals + 3 * i, points + 3 * i, light + 3 * b,
                                            camera + 3 * b, shininess[b], grad_lobe, gn, gp, gl,
                                            gc, &gk);
        if (grad_albedo != nullptr) {
          if (albedo_channels == 3) {
            for (int c = 0; c < 3; ++c) grad_albedo[3 * i + c] = g[c] * lobe;
          } else {
            grad_albedo[i] = (g[0] + g[1] + g[2]) * lobe;
          }
        }
        for (int c = 0; c < 3; ++c) {
          if (grad_normals != nullptr) grad_normals[3 * i + c] = gn[c];
          if (grad_points != nullptr) grad_points[3 * i + c] = gp[c];
          sums[c] += gl[c];
          sums[3 + c] += gc[c];
        }
        sums[6] += gk;
      }
      for (int k = 0; k < kSums; ++k) partial[kSums * unit + k] = sums[k];
    }
  });
  for (int64_t b = 0; b < batch; ++b) {
    T sums[kSums] = {T(0), T(0), T(0), T(0), T(0), T(0), T(0)};
    for (int64_t chunk = 0; chunk < chunks; ++chunk)
      for (int k = 0; k < kSums; ++k) sums[k] += partial[kSums * (b * chunks + chunk) + k];
    for (int c = 0; c < 3; ++c) {
      if (grad_light != nullptr) grad_light[3 * b + c] = sums[c];
      if (grad_camera != nullptr) grad_camera[3 * b + c] = sums[3 + c];
    }
    if (grad_shininess != nullptr) grad_shininess[b] = sums[6];
  }
}

#define FACEGEOM_SHADING_INDEX(I)                                                              \
  template int64_t build_vertex_corners<I>(int64_t, int64_t, const I*, int64_t*, int64_t*);  \
  template void vertex_normals_forward<float, I>(int64_t, int64_t, int64_t, const float*,      \
                                                 const I*, const int64_t*, const int64_t*,     \
                                                 float*, float*, float*);                      \
  template void vertex_normals_forward<double, I>(int64_t, int64_t, int64_t, const double*,    \
                                                  const I*, const int64_t*, const int64_t*,    \
                                                  double*, double*, double*);                  \
  template void vertex_normals_backward<float, I>(int64_t, int64_t, int64_t, const float*,     \
                                                  const I*, const int64_t*, const int64_t*,    \
                                                  const float*, const float*, const float*,    \
                                                  float*, float*, float*);                     \
  template void vertex_normals_backward<double, I>(int64_t, int64_t, int64_t, const double*,   \
                                                   const I*, const int64_t*, const int64_t*,   \
                                                   const double*, const double*,               \
                                                   const double*, double*, double*, double*);
FACEGEOM_SHADING_INDEX(int32_t)
FACEGEOM_SHADING_INDEX(int64_t)
#undef FACEGEOM_SHADING_INDEX

#define FACEGEOM_SHADING_FLOAT(T)                                                               \
  template void sh_basis_forward<T>(int64_t, const shading::ShTable<T>&, const T*, T*);                  \
  template void sh_basis_backward<T>(int64_t, const shading::ShTable<T>&, const T*, const T*, T*);       \
  template void sh_shading_forward<T>(int64_t, int64_t, const shading::ShTable<T>&, const T*, const T*,  \
                                      const T*, T*);                                            \
  template void sh_shading_backward<T>(int64_t, int64_t, const shading::ShTable<T>&, const T*,           \
                                       const T*, const T*, const T*, T*, T*, T*);               \
  template void blinn_phong_forward<T>(int64_t, int64_t, const T*, const T*, const T*,          \
                                       const T*, const T*, int64_t, const T*, T*);              \
  template void blinn_phong_backward<T>(int64_t, int64_t, const T*, const T*, const T*,         \
                                        const T*, const T*, int64_t, const T*, const T*, T*,    \
                                        T*, T*, T*, T*, T*);
FACEGEOM_SHADING_FLOAT(float)
FACEGEOM_SHADING_FLOAT(double)
#undef FACEGEOM_SHADING_FLOAT

}  // namespace cpu
}  // namespace facegeom

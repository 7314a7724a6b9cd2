#include "cpu/lbs_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "facegeom/rigid_transform.h"
#include "facegeom/rodrigues.h"
#include "facegeom/skinning.h"

namespace facegeom {
namespace cpu {
namespace {

int64_t num_chunks(int64_t n, int64_t chunk) { return (n + chunk - 1) / chunk; }

// Eight independent accumulators let the compiler keep several FMAs in flight
// (a single running sum is latency bound); the AVX2 clone is picked at run time.
template <typename T>
__attribute__((target_clones("arch=x86-64-v3", "default"))) T dot(const T* a, const T* b, int64_t n) {
  T acc[8] = {T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0)};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int l = 0; l < 8; ++l) acc[l] += a[i + l] * b[i + l];
  }
  T total = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) total += a[i] * b[i];
  return total;
}

template <typename T>
__attribute__((target_clones("arch=x86-64-v3", "default"))) void axpy(T alpha, const T* x, T* y,
                                                                int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// Gathers n consecutive rows of a row-major [*, width] array into [width][n].
template <typename T>
void to_columns(const T* rows, int64_t n, int64_t width, T* columns) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < width; ++c) columns[c * n + i] = rows[width * i + c];
}

template <typename T>
void from_columns(const T* columns, int64_t n, int64_t width, T* rows) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < width; ++c) rows[width * i + c] = columns[c * n + i];
}

}  // namespace

template <typename T>
void rodrigues_forward(int64_t n, const T* axis_angle, T* rot) {
  at::parallel_for(0, n, 2048, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) lbs::rodrigues_forward(axis_angle + 3 * i, rot + 9 * i);
  });
}

template <typename T>
void rodrigues_backward(int64_t n, const T* axis_angle, const T* grad_rot, T* grad_axis_angle) {
  at::parallel_for(0, n, 2048, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      lbs::rodrigues_backward(axis_angle + 3 * i, grad_rot + 9 * i, grad_axis_angle + 3 * i);
    }
  });
}

template <typename T>
void rigid_transform_forward(int64_t batch, int64_t num_joints, const T* rot, const T* joints,
                             const int64_t* parents, T* posed, T* rel) {
  at::parallel_for(0, batch, 64, [&](int64_t begin, int64_t end) {
    std::vector<T> world(12 * num_joints);
    for (int64_t b = begin; b < end; ++b) {
      lbs::rigid_transform_forward(num_joints, rot + 9 * num_joints * b,
                                        joints + 3 * num_joints * b, parents, world.data(),
                                        posed + 3 * num_joints * b, rel + 16 * num_joints * b);
    }
  });
}

template <typename T>
void rigid_transform_backward(int64_t batch, int64_t num_joints, const T* rot, const T* joints,
                              const int64_t* parents, const T* grad_posed, const T* grad_rel,
                              T* grad_rot, T* grad_joints) {
  at::parallel_for(0, batch, 64, [&](int64_t begin, int64_t end) {
    std::vector<T> world(12 * num_joints), grad_world(12 * num_joints);
    for (int64_t b = begin; b < end; ++b) {
      const T* rot_b = rot + 9 * num_joints * b;
      const T* joints_b = joints + 3 * num_joints * b;
      // Recomputing the chain is cheaper than saving [B,J,3,4] for backward.
      lbs::rigid_transform_world(num_joints, rot_b, joints_b, parents, world.data());
      lbs::rigid_transform_backward(num_joints, rot_b, joints_b, parents, world.data(),
                                         grad_posed + 3 * num_joints * b,
                                         grad_rel + 16 * num_joints * b, grad_world.data(),
                                         grad_rot + 9 * num_joints * b,
                                         grad_joints + 3 * num_joints * b);
    }
  });
}

template <typename T>
__attribute__((target_clones("arch=x86-64-v3", "default"))) void skin_forward(
    int64_t batch, int64_t num_vertices, int64_t num_joints, const T* vertices, const T* weights,
    int64_t weights_batch_stride, const T* transforms, T* out) {
  const int64_t chunks = num_chunks(num_vertices, kVertexChunk);
  // Chunk-major so that shared weights are transposed once for the whole batch.
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> xyz(3 * kVertexChunk), w(num_joints * kVertexChunk), moved(3 * kVertexChunk);
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t v0 = chunk * kVertexChunk;
      const int64_t n = std::min(num_vertices, v0 + kVertexChunk) - v0;
      for (int64_t b = 0; b < batch; ++b) {
        if (b == 0 || weights_batch_stride != 0) {
          to_columns(weights + weights_batch_stride * b + num_joints * v0, n, num_joints, w.data());
        }
        to_columns(vertices + 3 * (b * num_vertices + v0), n, 3, xyz.data());
        lbs::skin_block_forward(n, num_joints, xyz.data(), w.data(),
                                     transforms + 16 * num_joints * b, moved.data());
        from_columns(moved.data(), n, 3, out + 3 * (b * num_vertices + v0));
      }
    }
  });
}

template <typename T>
__attribute__((target_clones("arch=x86-64-v3", "default"))) void skin_backward(
    int64_t batch, int64_t num_vertices, int64_t num_joints, const T* vertices, const T* weights,
    int64_t weights_batch_stride, const T* transforms, const T* grad_out, T* grad_vertices,
    T* grad_weights, T* grad_transforms) {
  const int64_t chunks = num_chunks(num_vertices, kVertexChunk);
  const bool shared_weights = weights_batch_stride == 0;
  const int64_t per_batch = 16 * num_joints;
  // Per-chunk partial sums of grad_transforms, reduced in chunk order below.
  std::vector<T> partial(grad_transforms != nullptr ? chunks * batch * per_batch : 0, T(0));
  // Chunks are the parallel unit and the batch loop is inside, so shared
  // weights are transposed once and their batch sum accumulates without races.
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    const int64_t wn = num_joints * kVertexChunk;
    std::vector<T> xyz(3 * kVertexChunk), g(3 * kVertexChunk), gx(3 * kVertexChunk);
    std::vector<T> w(wn), gw(wn), gw_sum(wn);
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t v0 = chunk * kVertexChunk;
      const int64_t n = std::min(num_vertices, v0 + kVertexChunk) - v0;
      std::fill(gw_sum.begin(), gw_sum.end(), T(0));
      for (int64_t b = 0; b < batch; ++b) {
        if (b == 0 || !shared_weights) {
          to_columns(weights + weights_batch_stride * b + num_joints * v0, n, num_joints, w.data());
        }
        const int64_t row0 = b * num_vertices + v0;
        to_columns(vertices + 3 * row0, n, 3, xyz.data());
        to_columns(grad_out + 3 * row0, n, 3, g.data());
        lbs::skin_block_backward(
            n, num_joints, xyz.data(), w.data(), transforms + per_batch * b, g.data(),
            grad_vertices != nullptr ? gx.data() : nullptr,
            grad_weights != nullptr ? gw.data() : nullptr,
            grad_transforms != nullptr ? partial.data() + (chunk * batch + b) * per_batch : nullptr);
        if (grad_vertices != nullptr) from_columns(gx.data(), n, 3, grad_vertices + 3 * row0);
        if (grad_weights != nullptr) {
          if (shared_weights) {
            for (int64_t i = 0; i < num_joints * n; ++i) gw_sum[i] += gw[i];
          } else {
            from_columns(gw.data(), n, num_joints, grad_weights + num_joints * row0);
          }
        }
      }
      if (grad_weights != nullptr && shared_weights) {
        from_columns(gw_sum.data(), n, num_joints, grad_weights + num_joints * v0);
      }
    }
  });
  if (grad_transforms != nullptr) {
    std::fill(grad_transforms, grad_transforms + batch * per_batch, T(0));
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      const T* src = partial.data() + chunk * batch * per_batch;
      for (int64_t i = 0; i < batch * per_batch; ++i) grad_transforms[i] += src[i];
    }
  }
}

template <typename T>
void lbs_shape_pose_blend_forward(int64_t batch, int64_t num_vertices, int64_t num_betas,
                              int64_t num_pose_features, int64_t num_joints, const T* betas,
                              const T* pose_feature, const T* v_template,
                              int64_t template_batch_stride, const T* shapedirs,
                              const T* posedirs, const T* J_regressor, T* v_shaped, T* v_posed,
                              T* joints) {
  const int64_t rows = 3 * num_vertices;
  const int64_t chunks = num_chunks(num_vertices, kVertexChunk);
  const int64_t joint_values = batch * num_joints * 3;
  std::vector<T> joint_partial(chunks * joint_values);
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t v0 = chunk * kVertexChunk;
      const int64_t v1 = std::min(num_vertices, v0 + kVertexChunk);
      const int64_t r0 = 3 * v0, r1 = 3 * v1;
      // Each basis row is read from memory once and reused for every batch element.
      for (int64_t r = r0; r < r1; ++r) {
        const T* basis_row = shapedirs + r * num_betas;
        for (int64_t b = 0; b < batch; ++b) {
          v_shaped[b * rows + r] =
              v_template[b * template_batch_stride + r] + dot(basis_row, betas + b * num_betas, num_betas);
        }
      }
      for (int64_t b = 0; b < batch; ++b) {
        std::copy(v_shaped + b * rows + r0, v_shaped + b * rows + r1, v_posed + b * rows + r0);
      }
      for (int64_t p = 0; p < num_pose_features; ++p) {
        const T* corrective = posedirs + p * rows + r0;
        for (int64_t b = 0; b < batch; ++b) {
          axpy(pose_feature[b * num_pose_features + p], corrective, v_posed + b * rows + r0, r1 - r0);
        }
      }
      T* partial = joint_partial.data() + chunk * joint_values;
      for (int64_t b = 0; b < batch; ++b) {
        const T* vs = v_shaped + b * rows;
        for (int64_t j = 0; j < num_joints; ++j) {
          const T* reg = J_regressor + j * num_vertices;
          T acc[3] = {T(0), T(0), T(0)};
          for (int64_t v = v0; v < v1; ++v) {
            acc[0] += reg[v] * vs[3 * v];
            acc[1] += reg[v] * vs[3 * v + 1];
            acc[2] += reg[v] * vs[3 * v + 2];
          }
          for (int c = 0; c < 3; ++c) partial[(b * num_joints + j) * 3 + c] = acc[c];
        }
      }
    }
  });
  std::fill(joints, joints + joint_values, T(0));
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const T* src = joint_partial.data() + chunk * joint_values;
    for (int64_t i = 0; i < joint_values; ++i) joints[i] += src[i];
  }
}

template <typename T>
void lbs_shape_pose_blend_backward(int64_t batch, int64_t num_vertices, int64_t num_betas,
                               int64_t num_pose_features, int64_t num_joints,
                               const T* grad_v_shaped, const T* grad_v_posed, const T* grad_joints,
                               const T* shapedirs, const T* posedirs, const T* J_regressor,
                               T* grad_v_shaped_total, T* grad_betas, T* grad_pose_feature) {
  const int64_t rows = 3 * num_vertices;
  const int64_t chunks = num_chunks(num_vertices, kVertexChunk);
  const int64_t beta_values = batch * num_betas;
  const int64_t pose_values = batch * num_pose_features;
  std::vector<T> beta_partial(grad_betas != nullptr ? chunks * beta_values : 0);
  std::vector<T> pose_partial(grad_pose_feature != nullptr ? chunks * pose_values : 0);
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t v0 = chunk * kVertexChunk;
      const int64_t v1 = std::min(num_vertices, v0 + kVertexChunk);
      const int64_t r0 = 3 * v0, r1 = 3 * v1;
      for (int64_t b = 0; b < batch; ++b) {
        T* total = grad_v_shaped_total + b * rows;
        const T* gj = grad_joints + b * num_joints * 3;
        for (int64_t v = v0; v < v1; ++v) {
          for (int c = 0; c < 3; ++c) {
            T acc = grad_v_shaped[b * rows + 3 * v + c] + grad_v_posed[b * rows + 3 * v + c];
            for (int64_t j = 0; j < num_joints; ++j) acc += J_regressor[j * num_vertices + v] * gj[3 * j + c];
            total[3 * v + c] = acc;
          }
        }
      }
      if (grad_betas != nullptr) {
        T* partial = beta_partial.data() + chunk * beta_values;
        std::fill(partial, partial + beta_values, T(0));
        for (int64_t r = r0; r < r1; ++r) {
          const T* basis_row = shapedirs + r * num_betas;
          for (int64_t b = 0; b < batch; ++b) {
            axpy(grad_v_shaped_total[b * rows + r], basis_row, partial + b * num_betas, num_betas);
          }
        }
      }
      if (grad_pose_feature != nullptr) {
        T* partial = pose_partial.data() + chunk * pose_values;
        for (int64_t p = 0; p < num_pose_features; ++p) {
          const T* corrective = posedirs + p * rows + r0;
          for (int64_t b = 0; b < batch; ++b) {
            partial[b * num_pose_features + p] = dot(corrective, grad_v_posed + b * rows + r0, r1 - r0);
          }
        }
      }
    }
  });
  auto reduce = [chunks](const std::vector<T>& partial, int64_t values, T* out) {
    std::fill(out, out + values, T(0));
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      const T* src = partial.data() + chunk * values;
      for (int64_t i = 0; i < values; ++i) out[i] += src[i];
    }
  };
  if (grad_betas != nullptr) reduce(beta_partial, beta_values, grad_betas);
  if (grad_pose_feature != nullptr) reduce(pose_partial, pose_values, grad_pose_feature);
}

#define FACEGEOM_INSTANTIATE(T)                                                                   \
  template void rodrigues_forward<T>(int64_t, const T*, T*);                                      \
  template void rodrigues_backward<T>(int64_t, const T*, const T*, T*);                           \
  template void rigid_transform_forward<T>(int64_t, int64_t, const T*, const T*, const int64_t*,  \
                                           T*, T*);                                               \
  template void rigid_transform_backward<T>(int64_t, int64_t, const T*, const T*, const int64_t*, \
                                            const T*, const T*, T*, T*);                          \
  template void skin_forward<T>(int64_t, int64_t, int64_t, const T*, const T*, int64_t, const T*, \
                                T*);                                                              \
  template void skin_backward<T>(int64_t, int64_t, int64_t, const T*, const T*, int64_t,          \
                                 const T*, const T*, T*, T*, T*);                                 \
  template void lbs_shape_pose_blend_forward<T>(int64_t, int64_t, int64_t, int64_t, int64_t, const T*, \
                                            const T*, const T*, int64_t, const T*, const T*,      \
                                            const T*, T*, T*, T*);                                \
  template void lbs_shape_pose_blend_backward<T>(int64_t, int64_t, int64_t, int64_t, int64_t,         \
                                             const T*, const T*, const T*, const T*, const T*,    \
                                             const T*, T*, T*, T*);

FACEGEOM_INSTANTIATE(float)
FACEGEOM_INSTANTIATE(double)
#undef FACEGEOM_INSTANTIATE

}  // namespace cpu
}  // namespace facegeom

// CUDA launchers of the rasterizer family. Plain pointers and a cudaStream_t
// passed as void*, so this header needs neither torch nor CUDA.
//
// Image b draws "slots" 0 .. max_count - 1: slot i is triangle first_b + i when
// i < count_b, where (first_b, count_b) = ranges[b] (a device copy) in range
// mode and (0, num_triangles) otherwise (ranges null, max_count = F); vertices
// at pos + b * pos_batch_stride.
#pragma once

#include <cstdint>

namespace facegeom {
namespace cuda {

// Side of the square screen tiles that triangle-tile pairs are formed on.
constexpr int64_t kRasterTile = 8;

// One thread per (image, slot): clipped pixel box [x0, x1, y0, y1] (int32) and
// the number of tiles it touches (0 when the triangle is not drawn).
template <typename T>
void rasterize_bin(int64_t batch, int64_t max_count, int64_t num_vertices, const T* pos,
                   int64_t pos_batch_stride, const int32_t* tri, int64_t num_triangles,
                   const int32_t* ranges, int64_t height, int64_t width, int32_t* boxes,
                   int64_t* tile_counts, void* stream);

// One thread per triangle-tile pair (pair_end: inclusive prefix sum of
// tile_counts): depth-tests the pixels of its tile with a 64-bit atomicMin on
// the (depth, id) key, so the winner is the CPU's, bit for bit.
template <typename T>
void rasterize_pairs(int64_t batch, int64_t max_count, int64_t num_vertices, const T* pos,
                     int64_t pos_batch_stride, const int32_t* tri, int64_t num_triangles,
                     const int32_t* ranges, int64_t height, int64_t width, const int32_t* boxes,
                     const int64_t* pair_end, int64_t num_pairs, unsigned long long* keys,
                     void* stream);

// One thread per pixel: rast (and rast_db when non-null) from the winning key.
template <typename T>
void rasterize_resolve(int64_t batch, int64_t num_vertices, const T* pos, int64_t pos_batch_stride,
                       const int32_t* tri, int64_t height, int64_t width,
                       const unsigned long long* keys, T* rast, T* rast_db, void* stream);

// One thread per pixel, atomically adding into grad_pos (zeroed by the caller).
template <typename T>
void rasterize_backward(int64_t batch, int64_t num_vertices, const T* pos,
                        int64_t pos_batch_stride, const int32_t* tri, int64_t num_triangles,
                        int64_t height, int64_t width, const T* rast, const T* grad_rast,
                        const T* grad_db, T* grad_pos, void* stream);

// As the CPU launchers (cpu/rasterize_cpu.h); grad_attr is zeroed by the caller.
template <typename T>
void interpolate_forward(int64_t batch, int64_t height, int64_t width, int64_t channels,
                         const T* attr, int64_t attr_batch_stride, const T* rast,
                         const int32_t* tri, int64_t num_triangles, const T* rast_db,
                         const int64_t* diff_channels, int64_t num_diff, T* out, T* out_da,
                         void* stream);
template <typename T>
void interpolate_backward(int64_t batch, int64_t height, int64_t width, int64_t channels,
                          const T* attr, int64_t attr_batch_stride, const T* rast,
                          const int32_t* tri, int64_t num_triangles, const T* rast_db,
                          const int64_t* diff_channels, int64_t num_diff, const T* grad_out,
                          const T* grad_da, T* grad_attr, T* grad_rast, T* grad_rast_db,
                          void* stream);

}  // namespace cuda
}  // namespace facegeom

// CUDA launchers of rasterize (see facegeom/rasterize.h for RasterizeParams).
// Plain pointers and a cudaStream_t passed as void*, so this header needs
// neither torch nor CUDA. rasterize_host.h runs the forward's three passes.
//
// Image b draws "slots" 0 .. max_count - 1: slot i is triangle first_b + i when
// i < count_b, where (first_b, count_b) = ranges[b] (a device copy) in range
// mode and (0, num_triangles) otherwise (ranges null, max_count = F).
#pragma once

#include <cstdint>

#include "facegeom/rasterize.h"

namespace facegeom {
namespace cuda {

// Side of the square screen tiles that triangle-tile pairs are formed on.
constexpr int64_t kRasterTile = 8;

// Scratch of the forward's binning, on the device: filled field by field by
// rasterize_host.cpp.
struct RasterizeBins {
  int64_t max_count = 0;                // slots per image
  int32_t* boxes = nullptr;             // [B * max_count, 4] clipped pixel box x0, x1, y0, y1
  int64_t* tile_counts = nullptr;       // [B * max_count] tiles each slot touches
  const int64_t* pair_end = nullptr;    // [B * max_count] inclusive prefix sum of tile_counts
  int64_t num_pairs = 0;                // pair_end's last value
  unsigned long long* keys = nullptr;   // [B, H, W] (depth, id) keys, all ones = empty
};

// One thread per (image, slot): boxes and tile_counts (0 when the triangle is
// not drawn).
template <typename T>
void rasterize_bin(const raster::RasterizeParams<T>& p, const RasterizeBins& bins, void* stream);

// One thread per triangle-tile pair: depth-tests the pixels of its tile with a
// 64-bit atomicMin on the (depth, id) key, so the winner is the CPU's, bit for bit.
template <typename T>
void rasterize_pairs(const raster::RasterizeParams<T>& p, const RasterizeBins& bins, void* stream);

// One thread per pixel: rast (and rast_db when non-null) from the winning key.
template <typename T>
void rasterize_resolve(const raster::RasterizeParams<T>& p, const RasterizeBins& bins,
                       void* stream);

// One thread per pixel, atomically adding into grad_pos (zeroed by the caller).
template <typename T>
void rasterize_backward(const raster::RasterizeParams<T>& p, void* stream);

}  // namespace cuda
}  // namespace facegeom

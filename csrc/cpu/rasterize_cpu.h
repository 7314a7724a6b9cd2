// CPU launchers of rasterize: plain pointers in a parameter struct, contiguous
// row-major buffers; the bindings allocate, check and fill the struct. T is
// float or double. interpolate has its own files (interpolate_cpu.h).
#pragma once

#include <cstdint>

#include "facegeom/rasterize.h"

namespace facegeom {
namespace cpu {

// Images are cut into square tiles; triangles are binned to the tiles their
// bounding box touches and the tiles are rasterized in parallel.
constexpr int64_t kRasterTile = 16;

// rast (and rast_db when non-null) of every image (see raster::RasterizeParams).
template <typename T>
void rasterize_forward(const raster::RasterizeParams<T>& p);

// grad_pos from grad_rast (and grad_db when non-null). Results are independent
// of the thread count (per-pixel terms are summed in pixel order).
template <typename T>
void rasterize_backward(const raster::RasterizeParams<T>& p);

}  // namespace cpu
}  // namespace facegeom

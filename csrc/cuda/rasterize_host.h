// Host-side orchestration of the CUDA rasterizer: allocates the binning
// scratch, runs bin -> prefix sum -> pairs -> resolve on the given stream.
// ATen is used for the scratch buffers and the prefix sum only; the kernels
// are in rasterize.cu (torch-free). The bindings call this; they keep the
// schemas, checks and registrations.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "facegeom/rasterize.h"

namespace facegeom {
namespace cuda {

// p: filled by the bindings with device pointers, except p.ranges, which is
// ignored: `ranges` is the (already checked) int32 [B, 2] CPU tensor in range
// mode, undefined otherwise, and max_count the largest count in it (F when
// undefined). `like`: a tensor on the target device (for the scratch buffers).
template <typename T>
void rasterize_forward(raster::RasterizeParams<T> p, const at::Tensor& ranges, int64_t max_count,
                       const at::Tensor& like, void* stream);

}  // namespace cuda
}  // namespace facegeom

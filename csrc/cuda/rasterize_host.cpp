// See rasterize_host.h. Host C++ (compiled by the C++ compiler in a CUDA build);
// it only allocates, sums and launches.
#include "cuda/rasterize_host.h"

#include <ATen/ATen.h>

#include "cuda/rasterize_cuda.h"

namespace facegeom {
namespace cuda {

template <typename T>
void rasterize_forward(raster::RasterizeParams<T> p, const at::Tensor& ranges, int64_t max_count,
                       const at::Tensor& like, void* stream) {
  const at::Tensor ranges_device = ranges.defined() ? ranges.to(like.device()) : at::Tensor();
  p.ranges = ranges.defined() ? ranges_device.data_ptr<int32_t>() : nullptr;
  const int64_t num_slots = p.batch * max_count;
  at::Tensor boxes = at::empty({num_slots, 4}, like.options().dtype(at::kInt));
  at::Tensor tile_counts = at::empty({num_slots}, like.options().dtype(at::kLong));
  at::Tensor keys = at::full({p.batch, p.height, p.width}, -1, like.options().dtype(at::kLong));
  RasterizeBins bins;
  bins.max_count = max_count;
  bins.boxes = boxes.data_ptr<int32_t>();
  bins.tile_counts = tile_counts.data_ptr<int64_t>();
  bins.keys = reinterpret_cast<unsigned long long*>(keys.data_ptr<int64_t>());
  at::Tensor pair_end;
  if (num_slots > 0) {
    rasterize_bin<T>(p, bins, stream);
    pair_end = tile_counts.cumsum(0);
    bins.pair_end = pair_end.data_ptr<int64_t>();
    bins.num_pairs = pair_end[-1].item<int64_t>();
    if (bins.num_pairs > 0) rasterize_pairs<T>(p, bins, stream);
  }
  rasterize_resolve<T>(p, bins, stream);
}

template void rasterize_forward<float>(raster::RasterizeParams<float>, const at::Tensor&, int64_t,
                                       const at::Tensor&, void*);
template void rasterize_forward<double>(raster::RasterizeParams<double>, const at::Tensor&,
                                        int64_t, const at::Tensor&, void*);

}  // namespace cuda
}  // namespace facegeom

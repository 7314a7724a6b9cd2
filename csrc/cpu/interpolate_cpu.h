// CPU launchers of interpolate (see facegeom/interpolate.h for the parameters);
// the bindings allocate, check and fill the struct. T is float or double.
#pragma once

#include "facegeom/interpolate.h"

namespace facegeom {
namespace cpu {

// out (and out_da) from attr, rast, tri (and rast_db). Pixels naming a
// triangle id outside [0, F) get NaN.
template <typename T>
void interpolate_forward(const raster::InterpolateParams<T>& p);

// grad_attr, grad_rast (and grad_rast_db) from grad_out (and grad_da).
// grad_attr is summed in float64 in pixel order: independent of the thread count.
template <typename T>
void interpolate_backward(const raster::InterpolateParams<T>& p);

}  // namespace cpu
}  // namespace facegeom

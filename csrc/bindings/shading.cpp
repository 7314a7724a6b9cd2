// Schemas and device registrations of the shading family: vertex normals,
// spherical-harmonic lighting and the Blinn-Phong specular lobe.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>
#include <string>

#include "bindings/checks.h"
#include "bindings/dispatch.h"
#include "cpu/shading_cpu.h"
#ifdef FACEGEOM_WITH_CUDA
#include "cuda/shading_cuda.h"
#endif

namespace facegeom {
namespace {

int parse_convention(c10::string_view convention) {
  if (convention == "deep3d") return shading::kShDeep3d;
  if (convention == "deca") return shading::kShDeca;
  if (convention == "irradiance") return shading::kShIrradiance;
  TORCH_CHECK_VALUE(false, "convention must be \"deep3d\", \"deca\" or \"irradiance\", got \"",
                    std::string(convention), "\"");
  return -1;
}

// ---------------------------------------------------------------------------
// Vertex normals

void check_mesh(const at::Tensor& vertices, const at::Tensor& faces) {
  check_float(vertices, "vertices");
  TORCH_CHECK_VALUE(vertices.dim() == 3 && vertices.size(2) == 3,
                    "vertices must have shape [B, V, 3], got ", vertices.sizes());
  TORCH_CHECK_TYPE(faces.scalar_type() == at::kInt || faces.scalar_type() == at::kLong,
                   "faces must be int32 or int64, got ", faces.scalar_type());
  TORCH_CHECK(faces.device() == vertices.device(), "faces must be on ", vertices.device(),
              ", got ", faces.device());
  TORCH_CHECK_VALUE(faces.dim() == 2 && faces.size(1) == 3, "faces must have shape [F, 3], got ",
                    faces.sizes());
}

// The CPU corner lists double as the range check of faces (one pass).
struct VertexCorners {
  at::Tensor offsets, entries;
};

VertexCorners vertex_corners_cpu(const at::Tensor& faces, int64_t num_vertices) {
  const auto options = faces.options().dtype(at::kLong);
  VertexCorners csr{at::empty({num_vertices + 1}, options), at::empty({faces.numel()}, options)};
  AT_DISPATCH_INDEX_TYPES(faces.scalar_type(), "vertex_corners", [&] {
    const index_t* data = faces.data_ptr<index_t>();
    const int64_t bad = cpu::build_vertex_corners<index_t>(
        num_vertices, faces.size(0), data, csr.offsets.data_ptr<int64_t>(),
        csr.entries.data_ptr<int64_t>());
    TORCH_CHECK_INDEX(bad < 0, "faces must index vertices in [0, ", num_vertices, "); faces[",
                      bad / 3, ", ", bad % 3, "] = ", bad < 0 ? 0 : int64_t(data[bad]));
  });
  return csr;
}

void check_face_range_cuda(const at::Tensor& faces, int64_t num_vertices) {
  if (faces.numel() == 0) return;
  const auto [lo, hi] = at::aminmax(faces);
  const int64_t min_index = lo.item<int64_t>(), max_index = hi.item<int64_t>();
  TORCH_CHECK_INDEX(min_index >= 0 && max_index < num_vertices,
                    "faces must index vertices in [0, ", num_vertices, "); found indices from ",
                    min_index, " to ", max_index);
}

// Returns the unit normals and, for the backward pass, 1 / |sum| per vertex.
std::tuple<at::Tensor, at::Tensor> vertex_normals(const at::Tensor& vertices,
                                                  const at::Tensor& faces) {
  check_mesh(vertices, faces);
  c10::DeviceGuard guard(vertices.device());
  const auto v = vertices.contiguous();
  const auto f = faces.contiguous();
  const int64_t batch = v.size(0), num_vertices = v.size(1), num_faces = f.size(0);
  if (v.is_cuda()) {
    check_face_range_cuda(f, num_vertices);
    auto out = at::zeros_like(v);
    auto inv_len = at::zeros({batch, num_vertices}, v.options());
    if (out.numel() == 0 || num_faces == 0) return {out, inv_len};
    AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "vertex_normals", [&] {
      AT_DISPATCH_INDEX_TYPES(f.scalar_type(), "vertex_normals", [&] {
        FACEGEOM_CUDA_LAUNCH(cuda::vertex_normals_forward<scalar_t, index_t>(
            batch, num_vertices, num_faces, v.data_ptr<scalar_t>(), f.data_ptr<index_t>(),
            out.data_ptr<scalar_t>(), inv_len.data_ptr<scalar_t>(), current_stream()));
      });
    });
    return {out, inv_len};
  }
  const auto csr = vertex_corners_cpu(f, num_vertices);
  auto out = at::empty_like(v);
  auto inv_len = at::empty({batch, num_vertices}, v.options());
  if (out.numel() == 0) return {out, inv_len};
  auto face_normals = at::empty({num_faces, 3}, v.options());
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "vertex_normals", [&] {
    using T = scalar_t;
    AT_DISPATCH_INDEX_TYPES(f.scalar_type(), "vertex_normals", [&] {
      cpu::vertex_normals_forward<T, index_t>(
          batch, num_vertices, num_faces, v.data_ptr<T>(), f.data_ptr<index_t>(),
          csr.offsets.data_ptr<int64_t>(), csr.entries.data_ptr<int64_t>(),
          face_normals.data_ptr<T>(), out.data_ptr<T>(), inv_len.data_ptr<T>());
    });
  });
  return {out, inv_len};
}

at::Tensor vertex_normals_backward(const at::Tensor& grad_out, const at::Tensor& vertices,
                                   const at::Tensor& faces, const at::Tensor& normals,
                                   const at::Tensor& inv_len) {
  check_mesh(vertices, faces);
  check_same(grad_out, vertices, "grad_out");
  check_same(normals, vertices, "normals");
  check_same(inv_len, vertices, "inv_len");
  check_shape(grad_out, vertices.sizes(), "grad_out");
  check_shape(normals, vertices.sizes(), "normals");
  check_shape(inv_len, {vertices.size(0), vertices.size(1)}, "inv_len");
  c10::DeviceGuard guard(vertices.device());
  const auto v = vertices.contiguous();
  const auto f = faces.contiguous();
  const auto g = grad_out.contiguous();
  const auto n = normals.contiguous();
  const auto il = inv_len.contiguous();
  const int64_t batch = v.size(0), num_vertices = v.size(1), num_faces = f.size(0);
  if (v.is_cuda()) {
    check_face_range_cuda(f, num_vertices);
    auto grad = at::zeros_like(v);
    if (grad.numel() == 0 || num_faces == 0) return grad;
    auto grad_sums = at::empty_like(v);
    AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "vertex_normals_backward", [&] {
      AT_DISPATCH_INDEX_TYPES(f.scalar_type(), "vertex_normals_backward", [&] {
        FACEGEOM_CUDA_LAUNCH(cuda::vertex_normals_backward<scalar_t, index_t>(
            batch, num_vertices, num_faces, v.data_ptr<scalar_t>(), f.data_ptr<index_t>(),
            n.data_ptr<scalar_t>(), il.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(),
            grad_sums.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(), current_stream()));
      });
    });
    return grad;
  }
  const auto csr = vertex_corners_cpu(f, num_vertices);
  auto grad = at::empty_like(v);
  if (grad.numel() == 0) return grad;
  auto face_scratch = at::empty({num_faces, 9}, v.options());
  auto vertex_scratch = at::empty({num_vertices, 3}, v.options());
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "vertex_normals_backward", [&] {
    using T = scalar_t;
    AT_DISPATCH_INDEX_TYPES(f.scalar_type(), "vertex_normals_backward", [&] {
      cpu::vertex_normals_backward<T, index_t>(
          batch, num_vertices, num_faces, v.data_ptr<T>(), f.data_ptr<index_t>(),
          csr.offsets.data_ptr<int64_t>(), csr.entries.data_ptr<int64_t>(), n.data_ptr<T>(),
          il.data_ptr<T>(), g.data_ptr<T>(), face_scratch.data_ptr<T>(),
          vertex_scratch.data_ptr<T>(), grad.data_ptr<T>());
    });
  });
  return grad;
}

// ---------------------------------------------------------------------------
// Spherical harmonics

void check_points(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.dim() == 2 && t.size(1) == 3, name, " must have shape [N, 3], got ",
                    t.sizes());
}

at::Tensor sh_basis(const at::Tensor& normals, c10::string_view convention) {
  check_float(normals, "normals");
  check_points(normals, "normals");
  const int conv = parse_convention(convention);
  c10::DeviceGuard guard(normals.device());
  const auto n = normals.contiguous();
  auto basis = at::empty({n.size(0), 9}, n.options());
  if (n.size(0) == 0) return basis;
  AT_DISPATCH_FLOATING_TYPES(n.scalar_type(), "sh_basis", [&] {
    const auto table = shading::sh_table<scalar_t>(conv);
    if (n.is_cuda()) {
      FACEGEOM_CUDA_LAUNCH(cuda::sh_basis_forward<scalar_t>(
          n.size(0), table, n.data_ptr<scalar_t>(), basis.data_ptr<scalar_t>(), current_stream()));
    } else {
      cpu::sh_basis_forward<scalar_t>(n.size(0), table, n.data_ptr<scalar_t>(),
                                      basis.data_ptr<scalar_t>());
    }
  });
  return basis;
}

at::Tensor sh_basis_backward(const at::Tensor& grad_basis, const at::Tensor& normals,
                             c10::string_view convention) {
  check_float(normals, "normals");
  check_points(normals, "normals");
  check_same(grad_basis, normals, "grad_basis");
  check_shape(grad_basis, {normals.size(0), 9}, "grad_basis");
  const int conv = parse_convention(convention);
  c10::DeviceGuard guard(normals.device());
  const auto n = normals.contiguous();
  const auto g = grad_basis.contiguous();
  auto grad = at::empty_like(n);
  if (n.size(0) == 0) return grad;
  AT_DISPATCH_FLOATING_TYPES(n.scalar_type(), "sh_basis_backward", [&] {
    const auto table = shading::sh_table<scalar_t>(conv);
    if (n.is_cuda()) {
      FACEGEOM_CUDA_LAUNCH(cuda::sh_basis_backward<scalar_t>(
          n.size(0), table, n.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(),
          grad.data_ptr<scalar_t>(), current_stream()));
    } else {
      cpu::sh_basis_backward<scalar_t>(n.size(0), table, n.data_ptr<scalar_t>(),
                                       g.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>());
    }
  });
  return grad;
}

void check_sh_shading_inputs(const at::Tensor& normals, const at::Tensor& albedo,
                             const at::Tensor& sh_coeffs) {
  check_float(normals, "normals");
  TORCH_CHECK_VALUE(normals.dim() == 3 && normals.size(2) == 3,
                    "normals must have shape [B, N, 3], got ", normals.sizes());
  check_same(albedo, normals, "albedo");
  check_same(sh_coeffs, normals, "sh_coeffs");
  check_shape(albedo, normals.sizes(), "albedo");
  check_shape(sh_coeffs, {normals.size(0), 9, 3}, "sh_coeffs");
}

at::Tensor sh_shading(const at::Tensor& normals, const at::Tensor& albedo,
                      const at::Tensor& sh_coeffs, c10::string_view convention) {
  check_sh_shading_inputs(normals, albedo, sh_coeffs);
  const int conv = parse_convention(convention);
  c10::DeviceGuard guard(normals.device());
  const auto n = normals.contiguous(), a = albedo.contiguous(), c = sh_coeffs.contiguous();
  const int64_t batch = n.size(0), num_points = n.size(1);
  auto out = at::empty_like(n);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(n.scalar_type(), "sh_shading", [&] {
    using T = scalar_t;
    const auto table = shading::sh_table<T>(conv);
    if (n.is_cuda()) {
      FACEGEOM_CUDA_LAUNCH(cuda::sh_shading_forward<T>(batch, num_points, table, n.data_ptr<T>(),
                                                       a.data_ptr<T>(), c.data_ptr<T>(),
                                                       out.data_ptr<T>(), current_stream()));
    } else {
      cpu::sh_shading_forward<T>(batch, num_points, table, n.data_ptr<T>(), a.data_ptr<T>(),
                                 c.data_ptr<T>(), out.data_ptr<T>());
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sh_shading_backward(
    const at::Tensor& grad_out, const at::Tensor& normals, const at::Tensor& albedo,
    const at::Tensor& sh_coeffs, c10::string_view convention, std::array<bool, 3> output_mask) {
  check_sh_shading_inputs(normals, albedo, sh_coeffs);
  check_same(grad_out, normals, "grad_out");
  check_shape(grad_out, normals.sizes(), "grad_out");
  const int conv = parse_convention(convention);
  c10::DeviceGuard guard(normals.device());
  const auto n = normals.contiguous(), a = albedo.contiguous(), c = sh_coeffs.contiguous();
  const auto g = grad_out.contiguous();
  const int64_t batch = n.size(0), num_points = n.size(1);
  auto grad_normals = output_mask[0] ? at::empty_like(n) : empty_grad(n);
  auto grad_albedo = output_mask[1] ? at::empty_like(a) : empty_grad(a);
  auto grad_coeffs = output_mask[2] ? at::zeros_like(c) : empty_grad(c);
  if (n.numel() == 0) return {grad_normals, grad_albedo, grad_coeffs};
  AT_DISPATCH_FLOATING_TYPES(n.scalar_type(), "sh_shading_backward", [&] {
    using T = scalar_t;
    const auto table = shading::sh_table<T>(conv);
    if (n.is_cuda()) {
      FACEGEOM_CUDA_LAUNCH({
        at::Tensor partial;
        if (output_mask[2]) {
          partial = at::empty({batch, cuda::num_warps(num_points), 27}, n.options());
        }
        cuda::sh_shading_backward<T>(batch, num_points, table, n.data_ptr<T>(), a.data_ptr<T>(),
                                     c.data_ptr<T>(), g.data_ptr<T>(), ptr_or_null<T>(grad_normals),
                                     ptr_or_null<T>(grad_albedo), ptr_or_null<T>(partial),
                                     current_stream());
        if (output_mask[2]) grad_coeffs = partial.sum(1).view({batch, 9, 3});
      });
    } else {
      cpu::sh_shading_backward<T>(batch, num_points, table, n.data_ptr<T>(), a.data_ptr<T>(),
                                  c.data_ptr<T>(), g.data_ptr<T>(), ptr_or_null<T>(grad_normals),
                                  ptr_or_null<T>(grad_albedo), ptr_or_null<T>(grad_coeffs));
    }
  });
  return {grad_normals, grad_albedo, grad_coeffs};
}

// ---------------------------------------------------------------------------
// Blinn-Phong

void check_blinn_phong_inputs(const at::Tensor& normals, const at::Tensor& points,
                              const at::Tensor& light_pos, const at::Tensor& camera_pos,
                              const at::Tensor& specular_albedo, const at::Tensor& shininess) {
  check_float(normals, "normals");
  TORCH_CHECK_VALUE(normals.dim() == 3 && normals.size(2) == 3,
                    "normals must have shape [B, N, 3], got ", normals.sizes());
  const int64_t batch = normals.size(0), num_points = normals.size(1);
  check_same(points, normals, "points");
  check_same(light_pos, normals, "light_pos");
  check_same(camera_pos, normals, "camera_pos");
  check_same(specular_albedo, normals, "specular_albedo");
  check_same(shininess, normals, "shininess");
  check_shape(points, normals.sizes(), "points");
  check_shape(light_pos, {batch, 3}, "light_pos");
  check_shape(camera_pos, {batch, 3}, "camera_pos");
  TORCH_CHECK_VALUE(specular_albedo.dim() == 3 && specular_albedo.size(0) == batch &&
                        specular_albedo.size(1) == num_points &&
                        (specular_albedo.size(2) == 1 || specular_albedo.size(2) == 3),
                    "specular_albedo must have shape [B, N, 3] or [B, N, 1] with B, N = ", batch,
                    ", ", num_points, ", got ", specular_albedo.sizes());
  check_shape(shininess, {batch}, "shininess");
}

at::Tensor blinn_phong(const at::Tensor& normals, const at::Tensor& points,
                       const at::Tensor& light_pos, const at::Tensor& camera_pos,
                       const at::Tensor& specular_albedo, const at::Tensor& shininess) {
  check_blinn_phong_inputs(normals, points, light_pos, camera_pos, specular_albedo, shininess);
  c10::DeviceGuard guard(normals.device());
  const auto n = normals.contiguous(), p = points.contiguous();
  const auto l = light_pos.contiguous(), c = camera_pos.contiguous();
  const auto a = specular_albedo.contiguous(), k = shininess.contiguous();
  const int64_t batch = n.size(0), num_points = n.size(1), channels = a.size(2);
  auto out = at::empty_like(n);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(n.scalar_type(), "blinn_phong", [&] {
    using T = scalar_t;
    if (n.is_cuda()) {
      FACEGEOM_CUDA_LAUNCH(cuda::blinn_phong_forward<T>(
          batch, num_points, n.data_ptr<T>(), p.data_ptr<T>(), l.data_ptr<T>(), c.data_ptr<T>(),
          a.data_ptr<T>(), channels, k.data_ptr<T>(), out.data_ptr<T>(), current_stream()));
    } else {
      cpu::blinn_phong_forward<T>(batch, num_points, n.data_ptr<T>(), p.data_ptr<T>(),
                                  l.data_ptr<T>(), c.data_ptr<T>(), a.data_ptr<T>(), channels,
                                  k.data_ptr<T>(), out.data_ptr<T>());
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
blinn_phong_backward(const at::Tensor& grad_out, const at::Tensor& normals,
                     const at::Tensor& points, const at::Tensor& light_pos,
                     const at::Tensor& camera_pos, const at::Tensor& specular_albedo,
                     const at::Tensor& shininess, std::array<bool, 6> output_mask) {
  check_blinn_phong_inputs(normals, points, light_pos, camera_pos, specular_albedo, shininess);
  check_same(grad_out, normals, "grad_out");
  check_shape(grad_out, normals.sizes(), "grad_out");
  c10::DeviceGuard guard(normals.device());
  const auto n = normals.contiguous(), p = points.contiguous();
  const auto l = light_pos.contiguous(), c = camera_pos.contiguous();
  const auto a = specular_albedo.contiguous(), k = shininess.contiguous();
  const auto g = grad_out.contiguous();
  const int64_t batch = n.size(0), num_points = n.size(1), channels = a.size(2);
  auto grad_n = output_mask[0] ? at::empty_like(n) : empty_grad(n);
  auto grad_p = output_mask[1] ? at::empty_like(p) : empty_grad(p);
  auto grad_l = output_mask[2] ? at::zeros_like(l) : empty_grad(l);
  auto grad_c = output_mask[3] ? at::zeros_like(c) : empty_grad(c);
  auto grad_a = output_mask[4] ? at::empty_like(a) : empty_grad(a);
  auto grad_k = output_mask[5] ? at::zeros_like(k) : empty_grad(k);
  if (n.numel() == 0) return {grad_n, grad_p, grad_l, grad_c, grad_a, grad_k};
  AT_DISPATCH_FLOATING_TYPES(n.scalar_type(), "blinn_phong_backward", [&] {
    using T = scalar_t;
    if (n.is_cuda()) {
      FACEGEOM_CUDA_LAUNCH({
        // Per-warp partial sums of the light (3), camera (3) and shininess (1) gradients.
        const bool reduce = output_mask[2] || output_mask[3] || output_mask[5];
        at::Tensor partial;
        if (reduce) partial = at::empty({batch, cuda::num_warps(num_points), 7}, n.options());
        cuda::blinn_phong_backward<T>(
            batch, num_points, n.data_ptr<T>(), p.data_ptr<T>(), l.data_ptr<T>(), c.data_ptr<T>(),
            a.data_ptr<T>(), channels, k.data_ptr<T>(), g.data_ptr<T>(), ptr_or_null<T>(grad_n),
            ptr_or_null<T>(grad_p), ptr_or_null<T>(grad_a), ptr_or_null<T>(partial),
            current_stream());
        if (reduce) {
          const auto sums = partial.sum(1);  // [B, 7]
          if (output_mask[2]) grad_l = sums.narrow(1, 0, 3).contiguous();
          if (output_mask[3]) grad_c = sums.narrow(1, 3, 3).contiguous();
          if (output_mask[5]) grad_k = sums.select(1, 6).contiguous();
        }
      });
    } else {
      cpu::blinn_phong_backward<T>(batch, num_points, n.data_ptr<T>(), p.data_ptr<T>(),
                                   l.data_ptr<T>(), c.data_ptr<T>(), a.data_ptr<T>(), channels,
                                   k.data_ptr<T>(), g.data_ptr<T>(), ptr_or_null<T>(grad_n),
                                   ptr_or_null<T>(grad_p), ptr_or_null<T>(grad_l),
                                   ptr_or_null<T>(grad_c), ptr_or_null<T>(grad_a),
                                   ptr_or_null<T>(grad_k));
    }
  });
  return {grad_n, grad_p, grad_l, grad_c, grad_a, grad_k};
}

// The same wrappers serve both devices: they dispatch on the tensors' device.
void register_shading_kernels(torch::Library& m) {
  m.impl("vertex_normals", &vertex_normals);
  m.impl("vertex_normals_backward", &vertex_normals_backward);
  m.impl("sh_basis", &sh_basis);
  m.impl("sh_basis_backward", &sh_basis_backward);
  m.impl("sh_shading", &sh_shading);
  m.impl("sh_shading_backward", &sh_shading_backward);
  m.impl("blinn_phong", &blinn_phong);
  m.impl("blinn_phong_backward", &blinn_phong_backward);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(facegeom, m) {
  m.def("vertex_normals(Tensor vertices, Tensor faces) -> (Tensor, Tensor)");
  m.def(
      "vertex_normals_backward(Tensor grad_out, Tensor vertices, Tensor faces, Tensor normals, "
      "Tensor inv_len) -> Tensor");
  m.def("sh_basis(Tensor normals, str convention) -> Tensor");
  m.def("sh_basis_backward(Tensor grad_basis, Tensor normals, str convention) -> Tensor");
  m.def("sh_shading(Tensor normals, Tensor albedo, Tensor sh_coeffs, str convention) -> Tensor");
  m.def(
      "sh_shading_backward(Tensor grad_out, Tensor normals, Tensor albedo, Tensor sh_coeffs, "
      "str convention, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  m.def(
      "blinn_phong(Tensor normals, Tensor points, Tensor light_pos, Tensor camera_pos, "
      "Tensor specular_albedo, Tensor shininess) -> Tensor");
  m.def(
      "blinn_phong_backward(Tensor grad_out, Tensor normals, Tensor points, Tensor light_pos, "
      "Tensor camera_pos, Tensor specular_albedo, Tensor shininess, bool[6] output_mask) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(facegeom, CPU, m) { register_shading_kernels(m); }

#ifdef FACEGEOM_WITH_CUDA
TORCH_LIBRARY_IMPL(facegeom, CUDA, m) { register_shading_kernels(m); }
#endif

}  // namespace facegeom

// Schemas, checks and device registrations of texture (nvdiffrast's texture and
// texture_construct_mip): tex [N, H, W, C] or [N, 6, H, W, C] (cube), uv
// [B, h, w, 2 | 3], mip levels 1..L as a list of tensors shaped like tex.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <vector>

#include "bindings/checks.h"
#include "bindings/dispatch.h"
#include "cpu/texture_cpu.h"
#ifdef FACEGEOM_WITH_CUDA
#include "cuda/texture_cuda.h"
#endif

namespace facegeom {
namespace {

constexpr int64_t kMaxTextureSide = int64_t{1} << texture::kMaxMipLevel;

// Checks tex's layout for the boundary mode; returns (N, H, W, C).
std::tuple<int64_t, int64_t, int64_t, int64_t> check_tex(const at::Tensor& tex, bool cube) {
  check_float(tex, "tex");
  if (cube) {
    TORCH_CHECK_VALUE(tex.dim() == 5 && tex.size(1) == 6 && tex.size(2) == tex.size(3),
                      "tex must have shape [N, 6, H, H, C] for boundary mode cube, got ", tex.sizes());
  } else {
    TORCH_CHECK_VALUE(tex.dim() == 4, "tex must have shape [N, H, W, C], got ", tex.sizes());
  }
  const int64_t n = tex.size(0), h = tex.size(-3), w = tex.size(-2), c = tex.size(-1);
  TORCH_CHECK_VALUE(n > 0 && h > 0 && w > 0 && c > 0, "tex must not be empty, got ", tex.sizes());
  TORCH_CHECK_VALUE(h <= kMaxTextureSide && w <= kMaxTextureSide, "tex sides must be at most ",
                    kMaxTextureSide, ", got ", tex.sizes());
  return {n, h, w, c};
}

// Each mip level l (1-based) must be tex's shape with sides max(side >> l, 1).
void check_mip(const std::vector<at::Tensor>& mip, const at::Tensor& tex, const char* name) {
  TORCH_CHECK_VALUE(static_cast<int64_t>(mip.size()) <= texture::kMaxMipLevel, name, " holds ", mip.size(),
                    " levels; at most ", texture::kMaxMipLevel);
  const int64_t h = tex.size(-3), w = tex.size(-2);
  for (size_t i = 0; i < mip.size(); ++i) {
    const int level = static_cast<int>(i) + 1;
    std::vector<int64_t> expected = tex.sizes().vec();
    expected[expected.size() - 3] = texture::level_extent(h, level);
    expected[expected.size() - 2] = texture::level_extent(w, level);
    check_same(mip[i], tex, name);
    TORCH_CHECK_VALUE(mip[i].sizes() == at::IntArrayRef(expected), name, " level ", level, " must have shape ",
                      at::IntArrayRef(expected), ", got ", mip[i].sizes());
  }
}

struct TextureInputs {
  at::Tensor tex, uv, uv_da, bias;
  std::vector<at::Tensor> mip;
  int64_t filter, boundary;

  TextureInputs(const at::Tensor& tex_in, const at::Tensor& uv_in, const std::optional<at::Tensor>& uv_da_in,
                const std::optional<at::Tensor>& bias_in, at::TensorList mip_in, int64_t filter_mode,
                int64_t boundary_mode)
      : filter(filter_mode), boundary(boundary_mode) {
    TORCH_CHECK_VALUE(filter >= texture::kNearest && filter <= texture::kLinearMipmapLinear,
                      "filter_mode must be 0..3, got ", filter);
    TORCH_CHECK_VALUE(boundary >= texture::kCube && boundary <= texture::kZero, "boundary_mode must be 0..3, got ",
                      boundary);
    const bool cube = boundary == texture::kCube;
    const auto [n, h, w, c] = check_tex(tex_in, cube);
    check_same(uv_in, tex_in, "uv");
    const int64_t nuv = cube ? 3 : 2;
    TORCH_CHECK_VALUE(uv_in.dim() == 4 && uv_in.size(3) == nuv, "uv must have shape [B, h, w, ", nuv, "], got ",
                      uv_in.sizes());
    const int64_t b = uv_in.size(0);
    TORCH_CHECK_VALUE(n == 1 || n == b, "tex holds N = ", n, " textures; uv has B = ", b, " images (N must be 1 or B)");
    const bool mipmapped = filter == texture::kLinearMipmapNearest || filter == texture::kLinearMipmapLinear;
    if (mipmapped && uv_da_in.has_value()) {
      check_same(*uv_da_in, tex_in, "uv_da");
      const int64_t nda = cube ? 6 : 4;
      check_shape(*uv_da_in, {b, uv_in.size(1), uv_in.size(2), nda}, "uv_da");
      uv_da = uv_da_in->contiguous();
    }
    if (mipmapped && bias_in.has_value()) {
      check_same(*bias_in, tex_in, "mip_level_bias");
      check_shape(*bias_in, {b, uv_in.size(1), uv_in.size(2)}, "mip_level_bias");
      bias = bias_in->contiguous();
    }
    if (mipmapped) {
      std::vector<at::Tensor> levels(mip_in.begin(), mip_in.end());
      check_mip(levels, tex_in, "mip");
      for (auto& level : levels) mip.push_back(level.contiguous());
    }
    tex = tex_in.contiguous();
    uv = uv_in.contiguous();
  }

  template <typename T>
  texture::TextureParams<T> params() const {
    texture::TextureParams<T> p;
    p.batch = uv.size(0), p.height = uv.size(1), p.width = uv.size(2);
    p.channels = tex.size(-1);
    p.tex_batch = tex.size(0);
    p.tex_height = tex.size(-3), p.tex_width = tex.size(-2);
    p.filter = static_cast<int>(filter), p.boundary = static_cast<int>(boundary);
    p.max_level = static_cast<int>(mip.size());
    p.tex[0] = tex.data_ptr<T>();
    for (size_t i = 0; i < mip.size(); ++i) p.tex[i + 1] = mip[i].data_ptr<T>();
    p.uv = uv.data_ptr<T>();
    p.uv_da = uv_da.defined() ? uv_da.data_ptr<T>() : nullptr;
    p.bias = bias.defined() ? bias.data_ptr<T>() : nullptr;
    return p;
  }
};

at::Tensor texture_forward(const at::Tensor& tex, const at::Tensor& uv, const std::optional<at::Tensor>& uv_da,
                           const std::optional<at::Tensor>& mip_level_bias, at::TensorList mip, int64_t filter_mode,
                           int64_t boundary_mode) {
  const TextureInputs in(tex, uv, uv_da, mip_level_bias, mip, filter_mode, boundary_mode);
  c10::DeviceGuard guard(tex.device());
  auto out = at::empty({uv.size(0), uv.size(1), uv.size(2), tex.size(-1)}, in.tex.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(in.tex.scalar_type(), "texture", [&] {
    auto p = in.params<scalar_t>();
    p.out = out.data_ptr<scalar_t>();
    if (in.tex.is_cuda()) {
      FACEGEOM_CUDA_LAUNCH(cuda::texture_forward<scalar_t>(p, current_stream()));
    } else {
      cpu::texture_forward<scalar_t>(p);
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> texture_backward(
    const at::Tensor& grad_out, const at::Tensor& tex, const at::Tensor& uv, const std::optional<at::Tensor>& uv_da,
    const std::optional<at::Tensor>& mip_level_bias, at::TensorList mip, int64_t filter_mode,
    int64_t boundary_mode) {
  const TextureInputs in(tex, uv, uv_da, mip_level_bias, mip, filter_mode, boundary_mode);
  check_same(grad_out, tex, "grad_out");
  check_shape(grad_out, {uv.size(0), uv.size(1), uv.size(2), tex.size(-1)}, "grad_out");
  c10::DeviceGuard guard(tex.device());
  const auto g = grad_out.contiguous();
  auto grad_tex = at::zeros_like(in.tex);
  std::vector<at::Tensor> grad_mip;
  for (const auto& level : in.mip) grad_mip.push_back(at::zeros_like(level));
  const bool with_uv = filter_mode != texture::kNearest;
  auto grad_uv = with_uv ? at::empty_like(in.uv) : at::zeros_like(in.uv);
  auto grad_uv_da = in.uv_da.defined() ? at::empty_like(in.uv_da) : empty_grad(in.tex);
  auto grad_bias = in.bias.defined() ? at::empty_like(in.bias) : empty_grad(in.tex);
  if (g.numel() == 0) {
    grad_uv.zero_();
    if (in.uv_da.defined()) grad_uv_da.zero_();
    if (in.bias.defined()) grad_bias.zero_();
    return {grad_tex, grad_uv, grad_uv_da, grad_bias, grad_mip};
  }
  AT_DISPATCH_FLOATING_TYPES(in.tex.scalar_type(), "texture_backward", [&] {
    auto p = in.params<scalar_t>();
    p.grad_out = g.data_ptr<scalar_t>();
    p.grad_tex[0] = grad_tex.data_ptr<scalar_t>();
    for (size_t i = 0; i < grad_mip.size(); ++i) p.grad_tex[i + 1] = grad_mip[i].data_ptr<scalar_t>();
    p.grad_uv = with_uv ? grad_uv.data_ptr<scalar_t>() : nullptr;
    p.grad_uv_da = in.uv_da.defined() ? grad_uv_da.data_ptr<scalar_t>() : nullptr;
    p.grad_bias = in.bias.defined() ? grad_bias.data_ptr<scalar_t>() : nullptr;
    if (in.tex.is_cuda()) {
      FACEGEOM_CUDA_LAUNCH(cuda::texture_backward<scalar_t>(p, current_stream()));
    } else {
      cpu::texture_backward<scalar_t>(p);
    }
  });
  return {grad_tex, grad_uv, grad_uv_da, grad_bias, grad_mip};
}

// The number of levels nvdiffrast builds (calculateMipInfo): halve while a side is > 1,
// up to max_mip_level (-1: no limit); an odd side > 1 cannot be halved.
int mip_level_count(int64_t h, int64_t w, int64_t max_mip_level) {
  int levels = 0;
  while ((h > 1 || w > 1) && (max_mip_level < 0 || levels < max_mip_level)) {
    TORCH_CHECK_VALUE(!((w > 1 && w % 2) || (h > 1 && h % 2)), "cannot build mip level ", levels + 1,
                      ": level ", levels, " is ", h, " x ", w,
                      " and an odd side > 1 cannot be halved; resize the texture to powers of two or limit "
                      "the levels with max_mip_level");
    h = h > 1 ? h / 2 : 1;
    w = w > 1 ? w / 2 : 1;
    ++levels;
  }
  return levels;
}

std::vector<at::Tensor> texture_construct_mip(const at::Tensor& tex, int64_t max_mip_level, bool cube_mode) {
  TORCH_CHECK_VALUE(max_mip_level >= -1, "max_mip_level must be >= 0 (or -1: all levels), got ", max_mip_level);
  check_tex(tex, cube_mode);
  c10::DeviceGuard guard(tex.device());
  const auto base = tex.contiguous();
  const int64_t h = tex.size(-3), w = tex.size(-2), c = tex.size(-1);
  const int64_t planes = tex.numel() / (h * w * c);
  const int levels = mip_level_count(h, w, max_mip_level);
  std::vector<at::Tensor> mip;
  AT_DISPATCH_FLOATING_TYPES(tex.scalar_type(), "texture_construct_mip", [&] {
    const scalar_t* in = base.data_ptr<scalar_t>();
    for (int level = 1; level <= levels; ++level) {
      std::vector<int64_t> shape = tex.sizes().vec();
      const int64_t in_h = texture::level_extent(h, level - 1), in_w = texture::level_extent(w, level - 1);
      const int64_t out_h = texture::level_extent(h, level), out_w = texture::level_extent(w, level);
      shape[shape.size() - 3] = out_h;
      shape[shape.size() - 2] = out_w;
      auto out = at::empty(shape, base.options());
      if (tex.is_cuda()) {
        FACEGEOM_CUDA_LAUNCH(cuda::texture_mip_build<scalar_t>(in, planes, in_h, in_w, out.data_ptr<scalar_t>(),
                                                               out_h, out_w, c, current_stream()));
      } else {
        cpu::texture_mip_build<scalar_t>(in, planes, in_h, in_w, out.data_ptr<scalar_t>(), out_h, out_w, c);
      }
      mip.push_back(out);
      in = out.data_ptr<scalar_t>();
    }
  });
  return mip;
}

at::Tensor texture_construct_mip_backward(at::TensorList grad_mip, const at::Tensor& tex, bool cube_mode) {
  check_tex(tex, cube_mode);
  std::vector<at::Tensor> grads;
  for (const auto& g : grad_mip) grads.push_back(g.contiguous());
  check_mip(grads, tex, "grad_mip");
  c10::DeviceGuard guard(tex.device());
  auto grad_tex = at::zeros_like(tex, at::MemoryFormat::Contiguous);
  if (grads.empty()) return grad_tex;
  const int64_t h = tex.size(-3), w = tex.size(-2), c = tex.size(-1);
  const int64_t planes = tex.numel() / (h * w * c);
  AT_DISPATCH_FLOATING_TYPES(tex.scalar_type(), "texture_construct_mip_backward", [&] {
    texture::LevelPointers<scalar_t> levels;
    for (size_t i = 0; i < grads.size(); ++i) levels.level[i + 1] = grads[i].data_ptr<scalar_t>();
    const int max_level = static_cast<int>(grads.size());
    if (tex.is_cuda()) {
      FACEGEOM_CUDA_LAUNCH(cuda::texture_mip_pull<scalar_t>(levels, max_level, planes, h, w, c,
                                                            grad_tex.data_ptr<scalar_t>(), current_stream()));
    } else {
      cpu::texture_mip_pull<scalar_t>(levels, max_level, planes, h, w, c, grad_tex.data_ptr<scalar_t>());
    }
  });
  return grad_tex;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(facegeom, m) {
  m.def(
      "texture(Tensor tex, Tensor uv, Tensor? uv_da, Tensor? mip_level_bias, Tensor[] mip, int filter_mode, "
      "int boundary_mode) -> Tensor");
  m.def(
      "texture_backward(Tensor grad_out, Tensor tex, Tensor uv, Tensor? uv_da, Tensor? mip_level_bias, "
      "Tensor[] mip, int filter_mode, int boundary_mode) -> (Tensor, Tensor, Tensor, Tensor, Tensor[])");
  m.def("texture_construct_mip(Tensor tex, int max_mip_level, bool cube_mode) -> Tensor[]");
  m.def("texture_construct_mip_backward(Tensor[] grad_mip, Tensor tex, bool cube_mode) -> Tensor");
}

namespace {
void register_texture_kernels(torch::Library& m) {
  m.impl("texture", &texture_forward);
  m.impl("texture_backward", &texture_backward);
  m.impl("texture_construct_mip", &texture_construct_mip);
  m.impl("texture_construct_mip_backward", &texture_construct_mip_backward);
}
}  // namespace

TORCH_LIBRARY_IMPL(facegeom, CPU, m) { register_texture_kernels(m); }

#ifdef FACEGEOM_WITH_CUDA
TORCH_LIBRARY_IMPL(facegeom, CUDA, m) { register_texture_kernels(m); }
#endif

}  // namespace facegeom

"""facegeom: differentiable rendering and geometry for 3D face reconstruction.

    import facegeom
    verts, joints = facegeom.ops.lbs(betas, pose, v_template, shapedirs, posedirs,
                                     J_regressor, parents, lbs_weights)

See README.md and docs/ for the op reference and benchmarks.
"""
__version__ = "0.1.0"

from facegeom import ops  # noqa: E402  (after __version__ so the CLI can report it)
from facegeom import transforms  # noqa: E402
from facegeom import cameras, models, nets, render  # noqa: E402

__all__ = ["__version__", "cameras", "models", "nets", "ops", "render", "transforms"]

"""Autograd and dispatch policies shared by the op modules (docs/ops.md, "Autocast",
"Forward-mode AD"): double backward refused, forward mode refused, autocast upcast.

Sources: ``torch.library.register_autocast`` (PyTorch 2.13, ``torch/library.py``) for the
dispatcher-level policy; ``torch.amp.custom_fwd(cast_inputs=torch.float32)`` is the same
idea for ``autograd.Function`` (cast low-precision inputs, run with autocast disabled).
"""
from __future__ import annotations

import contextlib
import functools

import torch
import torch.autograd.forward_ad as forward_ad

from facegeom import _native

#: Device types whose autocast the ops follow (``torch.autocast(device_type)``).
AUTOCAST_DEVICES = ("cpu", "cuda")
_LOW_PRECISION = (torch.float16, torch.bfloat16)
_registered: set = set()  # ops whose autocast policy is registered


def forbid_double_backward(*op_names: str) -> None:
    """Register an autograd kernel on each ``facegeom::<op_name>`` backward op that raises.

    The backward ops are first-order only; without this, a double backward would
    silently return wrong (missing) second derivatives.
    """
    for op_name in op_names:
        def backward(ctx, *grads, _op_name=op_name):
            raise NotImplementedError(
                f"facegeom: double backward through {_op_name} is not supported; "
                "use facegeom.ops.reference for higher-order derivatives"
            )

        torch.library.register_autograd(f"facegeom::{op_name}", backward)


def _jvp_transform_active() -> bool:
    """Whether a torch.func forward-mode transform (jvp, jacfwd, hessian) is on the stack."""
    if torch._C._functorch.peek_interpreter_stack() is None:
        return False
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

    return any(i.key() == torch._C._functorch.TransformType.Jvp for i in retrieve_all_functorch_interpreters())


def forward_ad_inputs(tensors) -> bool:
    """True when forward-mode AD would have to flow through ``tensors``: one carries a
    tangent of the current dual level (``torch.autograd.forward_ad.make_dual``, or a
    ``torch.func.jvp`` / ``jacfwd`` whose transform is the innermost), or a jvp transform
    lies below another functorch transform (then the op refuses conservatively)."""
    if _jvp_transform_active():
        top = torch._C._functorch.peek_interpreter_stack()
        if top.key() != torch._C._functorch.TransformType.Jvp:
            return True  # e.g. vmap inside jvp: tangents cannot be inspected there
    elif forward_ad._current_level < 0:
        return False
    return any(forward_ad.unpack_dual(t).tangent is not None for t in tensors if isinstance(t, torch.Tensor))


def refuse_forward_ad(op_name: str, *tensors) -> None:
    """Raise ``NotImplementedError`` naming ``facegeom.ops.<op_name>`` when forward-mode AD
    would have to flow through ``tensors`` into its custom op (see :func:`op_policy`).
    Called by the public functions and by the unchecked ``_impl`` functions that
    ``facegeom.render`` uses, on their kernel path only. Skipped while compiling."""
    if not torch.compiler.is_compiling() and forward_ad_inputs(tensors):
        raise NotImplementedError(
            f"facegeom.ops.{op_name} does not support forward-mode AD (torch.func.jvp, jacfwd, "
            "forward_ad dual tensors): its custom op has a reverse-mode formula only. Use "
            f"reverse mode (backward, torch.autograd.grad), or facegeom.ops.reference.{op_name}, "
            "which supports forward mode"
        )


def op_policy(op_name: str, forward_mode: bool = False):
    """Decorator of every public op function (the kernel's entry point):

    * **forward mode**: the custom ops have reverse-mode formulas only, and PyTorch
      would silently give them zero tangents (``torch.library.register_autograd`` has
      no jvp). When a tensor argument carries a forward-mode tangent, raise
      ``NotImplementedError`` naming the op instead (the pure-PyTorch
      ``facegeom.ops.reference`` supports forward mode).
    * **autocast**: under ``torch.autocast`` on the CPU or CUDA, float16/bfloat16
      tensor arguments on that device are cast to float32 and the op runs with
      autocast disabled, so the result is float32 and equals the float32 op
      (PyTorch's "autocast to float32" op class). Outside autocast half inputs still
      raise the ops' TypeError.

    ``forward_mode=True`` marks functions whose differentiable path is plain PyTorch
    around non-differentiable kernel outputs (``closest_points``,
    ``point_to_plane_distance``): forward mode is exact there and allowed.
    """
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if not forward_mode and _native.AVAILABLE:
                refuse_forward_ad(op_name, *args, *kwargs.values())
            devices = [d for d in AUTOCAST_DEVICES if torch.is_autocast_enabled(d)]
            if not devices:
                return fn(*args, **kwargs)

            def upcast(x):
                if isinstance(x, torch.Tensor) and x.dtype in _LOW_PRECISION and x.device.type in devices:
                    return x.float()
                return x

            args = tuple(upcast(a) for a in args)
            kwargs = {k: upcast(v) for k, v in kwargs.items()}
            with contextlib.ExitStack() as stack:
                for device in devices:
                    stack.enter_context(torch.autocast(device, enabled=False))
                return fn(*args, **kwargs)

        wrapper.__doc__ = (fn.__doc__ or "").rstrip() + (_FORWARD_OK_NOTE if forward_mode else _POLICY_NOTE)
        return wrapper

    return decorate


_POLICY_NOTE = """

    Policies (docs/ops.md): under ``torch.autocast`` (CPU or CUDA) float16/bfloat16
    arguments are upcast to float32 and the result is float32; forward-mode AD
    (``torch.func.jvp``, ``jacfwd``, dual tensors) raises ``NotImplementedError``
    (``facegeom.ops.reference`` supports it).
"""
_FORWARD_OK_NOTE = """

    Policies (docs/ops.md): under ``torch.autocast`` (CPU or CUDA) float16/bfloat16
    arguments are upcast to float32 and the result is float32; forward-mode AD is
    exact here (its differentiable path is plain PyTorch).
"""


def register_autocast_policies() -> list:
    """Register the autocast policy (float16/bfloat16 inputs cast to float32) on every
    ``facegeom::`` custom op, for the CPU and CUDA autocast keys, so direct
    ``torch.ops.facegeom`` calls (and facegeom's internal ones) follow it too.
    Returns the op names registered. Idempotent."""
    names = sorted(n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("facegeom::"))
    for name in names:
        if name in _registered:
            continue
        for device in AUTOCAST_DEVICES:
            if torch._C._is_autocast_available(device):
                torch.library.register_autocast(f"facegeom::{name}", device, torch.float32)
        _registered.add(name)
    return names


"""Autograd helpers shared by the op modules."""
import torch


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

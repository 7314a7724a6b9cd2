"""One convention for every pipeline's "keep the leading k coefficients" smoke-data field:
None keeps all, 0 keeps none, anything else but an int >= 0 is a ValueError naming the field
(the same as facegeom.data.synthetic.SyntheticConfig's)."""
import pytest

from facegeom.data.synthetic import SyntheticConfig
from facegeom.pipelines import deep3d, mica, ringnet, specular, tdasl

FIELDS = [
    (SyntheticConfig, ("shape_components", "expression_components", "texture_components")),
    (deep3d.Config, ("synthetic_id_components", "synthetic_exp_components", "synthetic_tex_components")),
    (specular.Config, ("shape_components", "expression_components", "albedo_components")),
    (tdasl.Config, ("shape_components", "expression_components")),
    (mica.MICAConfig, ("synthetic_shape_components",)),
    (ringnet.RingNetConfig, ("shape_components",)),
]


@pytest.mark.parametrize("cls,names", FIELDS, ids=lambda x: getattr(x, "__qualname__", None))
def test_components_default_none_and_validated(cls, names):
    import dataclasses

    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for name in names:
        assert defaults[name] is None, (cls, name)  # None: all components
        cls(**{name: 0})
        cls(**{name: 3})
        for bad in (-1, True, 1.5, "3"):
            with pytest.raises(ValueError, match=name):
                cls(**{name: bad})

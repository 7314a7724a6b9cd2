"""facegeom.nets.iresnet against PIPELINES.md §1.6 / §6.6 (insightface / MICA layout) and a
functional transcription of insightface's IResNet forward run on the state dict alone."""
import pytest
import torch
import torch.nn.functional as F

from facegeom.nets import iresnet50, iresnet100

BN = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]


def expected_layout(blocks):
    """{key: shape} of insightface's IResNet, in registration order (PIPELINES.md §6.6)."""
    out = {"conv1.weight": (64, 3, 3, 3)}

    def bn(prefix, c):
        for name in BN:
            out[f"{prefix}.{name}"] = () if name == "num_batches_tracked" else (c,)

    bn("bn1", 64)
    out["prelu.weight"] = (64,)
    inplanes = 64
    for k, (planes, n) in enumerate(zip([64, 128, 256, 512], blocks), start=1):
        for i in range(n):
            p = f"layer{k}.{i}"
            cin = inplanes if i == 0 else planes
            bn(f"{p}.bn1", cin)
            out[f"{p}.conv1.weight"] = (planes, cin, 3, 3)
            bn(f"{p}.bn2", planes)
            out[f"{p}.prelu.weight"] = (planes,)
            out[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            bn(f"{p}.bn3", planes)
            if i == 0:
                out[f"{p}.downsample.0.weight"] = (planes, cin, 1, 1)
                bn(f"{p}.downsample.1", planes)
        inplanes = planes
    bn("bn2", 512)
    out["fc.weight"] = (512, 25088)
    out["fc.bias"] = (512,)
    bn("features", 512)
    return out


def layout(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_iresnet100_layout_is_micas():
    net = iresnet100()
    got = layout(net)
    assert list(got) == list(expected_layout([3, 13, 30, 3]))
    assert got == expected_layout([3, 13, 30, 3])
    assert len([k for k in got if k.startswith("layer2.") and k.endswith(".conv1.weight")]) == 13
    # features: BatchNorm1d with weight fixed at 1 and frozen (MICA:models/arcface.py:110-111)
    assert torch.all(net.features.weight == 1) and not net.features.weight.requires_grad
    assert net.dropout.p == 0.0


def test_iresnet50_layout():
    assert layout(iresnet50()) == expected_layout([3, 4, 14, 3])


def random_state(lay, seed):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in lay.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(3)
        elif k.endswith("running_var") or (len(shape) == 1 and k.endswith("weight")):
            sd[k] = torch.rand(shape, generator=g) + 0.5
        elif len(shape) == 1:
            sd[k] = torch.randn(shape, generator=g) * 0.1
        else:
            fan_in = torch.tensor(shape[1:]).prod().item()
            sd[k] = torch.randn(shape, generator=g) * (1.0 / fan_in) ** 0.5
    sd["features.weight"] = torch.ones(512)
    return sd


def ref_forward(sd, x, blocks):
    """Eval-mode insightface IResNet (iresnet.py IBasicBlock / IResNet.forward)."""
    def bn(p, t):
        return F.batch_norm(t, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"],
                            sd[p + ".bias"], False, 0.0, 1e-5)

    t = F.prelu(bn("bn1", F.conv2d(x, sd["conv1.weight"], padding=1)), sd["prelu.weight"])
    for k, n in enumerate(blocks, start=1):
        for i in range(n):
            p = f"layer{k}.{i}"
            stride = 2 if i == 0 else 1
            y = bn(p + ".bn1", t)
            y = F.prelu(bn(p + ".bn2", F.conv2d(y, sd[p + ".conv1.weight"], padding=1)), sd[p + ".prelu.weight"])
            y = bn(p + ".bn3", F.conv2d(y, sd[p + ".conv2.weight"], stride=stride, padding=1))
            if i == 0:
                t = bn(p + ".downsample.1", F.conv2d(t, sd[p + ".downsample.0.weight"], stride=2))
            t = y + t
    t = bn("bn2", t).flatten(1)
    t = F.linear(t, sd["fc.weight"], sd["fc.bias"])
    return bn("features", t)  # BatchNorm1d on [B, 512]


def test_reference_state_dict_loads_strict_and_matches():
    blocks = [3, 4, 14, 3]
    sd = random_state(expected_layout(blocks), seed=5)
    net = iresnet50()
    net.load_state_dict(sd, strict=True)
    net.eval()
    x = torch.rand(1, 3, 112, 112, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        got = net(x)
    assert got.shape == (1, 512)
    torch.testing.assert_close(got, ref_forward(sd, x, blocks), rtol=1e-4, atol=1e-4)


def test_bad_input_and_frozen_features_in_training():
    net = iresnet50()
    with pytest.raises(ValueError, match=r"x must have shape \[B, 3, 112, 112\]"):
        net(torch.zeros(1, 3, 64, 64))
    assert not net.features.weight.requires_grad and net.features.bias.requires_grad
    with pytest.raises(ValueError, match="input_size"):
        iresnet50(input_size=100)

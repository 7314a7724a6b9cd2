"""facegeom.nets.resnet against the layouts of PIPELINES.md §2.2, §2.8, §4.2, §4.6 and a
functional transcription of torchvision's ResNet forward run on the state dict alone."""
import importlib.util

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from facegeom.nets import resnet18, resnet50, resnet50_2dasl, resnet50_deep3d

BN = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]


def expected_layout(blocks, bottleneck, in_channels=3, fc=None, layer4_stride=2):
    """{key: shape} of a torchvision ResNet, written from the torchvision layout."""
    out = {"conv1.weight": (64, in_channels, 7, 7)}

    def bn(prefix, c):
        for name in BN:
            out[f"{prefix}.{name}"] = () if name == "num_batches_tracked" else (c,)

    bn("bn1", 64)
    inplanes = 64
    expansion = 4 if bottleneck else 1
    for k, (planes, n) in enumerate(zip([64, 128, 256, 512], blocks), start=1):
        for i in range(n):
            p = f"layer{k}.{i}"
            cin = inplanes if i == 0 else planes * expansion
            if bottleneck:  # registration order: conv1, bn1, conv2, bn2, conv3, bn3
                convs = [(planes, cin, 1, 1), (planes, planes, 3, 3), (planes * 4, planes, 1, 1)]
            else:
                convs = [(planes, cin, 3, 3), (planes, planes, 3, 3)]
            for j, shape in enumerate(convs, start=1):
                out[f"{p}.conv{j}.weight"] = shape
                bn(f"{p}.bn{j}", shape[0])
            if i == 0 and (k > 1 or bottleneck):
                out[f"{p}.downsample.0.weight"] = (planes * expansion, cin, 1, 1)
                bn(f"{p}.downsample.1", planes * expansion)
        inplanes = planes * expansion
    if fc is not None:
        out["fc.weight"] = (fc, 512 * expansion)
        out["fc.bias"] = (fc,)
    return out


def layout(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_deep3d_backbone_layout():
    net = resnet50_deep3d()
    got = layout(net)
    assert len(got) == 318  # PIPELINES.md §2.8: 318 backbone entries
    assert list(got) == list(expected_layout([3, 4, 6, 3], True))
    assert got == expected_layout([3, 4, 6, 3], True)
    assert not any(k.startswith("fc.") for k in got)


def test_2dasl_layout():
    got = layout(resnet50_2dasl())
    assert got == expected_layout([3, 4, 6, 3], True, in_channels=4, fc=62)
    assert got["conv1.weight"] == (64, 4, 7, 7) and got["fc.weight"] == (62, 2048)
    assert len(got) == 320


def test_imagenet_resnet50_and_resnet18_layouts():
    assert layout(resnet50()) == expected_layout([3, 4, 6, 3], True, fc=1000)
    assert list(layout(resnet18())) == list(expected_layout([2, 2, 2, 2], False, fc=1000))
    assert layout(resnet18(num_classes=None)) == expected_layout([2, 2, 2, 2], False)


def random_state(layout_dict, seed):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in layout_dict.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            sd[k] = torch.rand(shape, generator=g, dtype=torch.float32) + 0.5
        elif k.endswith("running_mean") or k.endswith("bias"):
            sd[k] = torch.randn(shape, generator=g, dtype=torch.float32) * 0.1
        elif len(shape) == 1:  # BN weight
            sd[k] = torch.rand(shape, generator=g, dtype=torch.float32) + 0.5
        else:
            fan_in = torch.tensor(shape[1:]).prod().item()
            sd[k] = torch.randn(shape, generator=g, dtype=torch.float32) * (1.0 / fan_in) ** 0.5
    return sd


def ref_forward(sd, x, blocks, bottleneck, layer4_stride=2, pool="adaptive"):
    """Eval-mode torchvision ResNet forward, written from the state dict alone."""
    def bn(p, t):
        return F.batch_norm(t, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"],
                            sd[p + ".bias"], False, 0.0, 1e-5)

    t = F.relu(bn("bn1", F.conv2d(x, sd["conv1.weight"], stride=2, padding=3)))
    t = F.max_pool2d(t, 3, 2, 1)
    for k, n in enumerate(blocks, start=1):
        for i in range(n):
            p = f"layer{k}.{i}"
            stride = (1 if k == 1 else (layer4_stride if k == 4 else 2)) if i == 0 else 1
            if bottleneck:
                y = F.relu(bn(p + ".bn1", F.conv2d(t, sd[p + ".conv1.weight"])))
                y = F.relu(bn(p + ".bn2", F.conv2d(y, sd[p + ".conv2.weight"], stride=stride, padding=1)))
                y = bn(p + ".bn3", F.conv2d(y, sd[p + ".conv3.weight"]))
            else:
                y = F.relu(bn(p + ".bn1", F.conv2d(t, sd[p + ".conv1.weight"], stride=stride, padding=1)))
                y = bn(p + ".bn2", F.conv2d(y, sd[p + ".conv2.weight"], padding=1))
            if p + ".downsample.0.weight" in sd:
                t = bn(p + ".downsample.1", F.conv2d(t, sd[p + ".downsample.0.weight"], stride=stride))
            t = F.relu(y + t)
    t = F.adaptive_avg_pool2d(t, 1) if pool == "adaptive" else F.avg_pool2d(t, 7, 2)
    if "fc.weight" in sd:
        t = F.linear(t.flatten(1), sd["fc.weight"], sd["fc.bias"])
    return t


@pytest.mark.parametrize("case", ["deep3d", "2dasl", "resnet18"])
def test_reference_state_dict_loads_strict_and_matches(case):
    if case == "deep3d":
        net, blocks, bott, kw, x_shape = resnet50_deep3d(), [3, 4, 6, 3], True, {}, (1, 3, 64, 64)
        lay = expected_layout(blocks, bott)
    elif case == "2dasl":
        net, blocks, bott = resnet50_2dasl(), [3, 4, 6, 3], True
        kw, x_shape = dict(layer4_stride=1, pool="avg7s2"), (1, 4, 120, 120)
        lay = expected_layout(blocks, bott, in_channels=4, fc=62)
    else:
        net, blocks, bott, kw, x_shape = resnet18(num_classes=5), [2, 2, 2, 2], False, {}, (1, 3, 64, 64)
        lay = expected_layout(blocks, bott, fc=5)
    sd = random_state(lay, seed=3)
    net = net.float()
    net.load_state_dict(sd, strict=True)
    net.eval()
    x = torch.randn(*x_shape, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    with torch.no_grad():
        got = net(x)
    want = ref_forward(sd, x, blocks, bott, **kw)
    if case == "deep3d":
        assert got.shape == (1, 2048, 1, 1)  # unflattened, as Deep3D's heads read it
    if case == "2dasl":
        assert got.shape == (1, 62)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_train_mode_backward_and_bad_input():
    net = resnet18(num_classes=3)
    out = net(torch.randn(2, 3, 32, 32))
    out.sum().backward()
    assert net.conv1.weight.grad is not None
    with pytest.raises(ValueError, match="x must have shape"):
        net(torch.randn(2, 4, 32, 32))
    with pytest.raises(ValueError, match="layer4_stride"):
        resnet50(layer4_stride=3)
    with pytest.raises(ValueError, match="avgpool"):
        resnet50(avgpool="max")


def test_init_matches_torchvision_scheme():
    torch.manual_seed(0)
    net = resnet50_2dasl()
    w = net.layer3[0].conv2.weight  # 3x3, 256 out: std sqrt(2 / (9 * 256)) (2DASL / torchvision)
    assert abs(w.std().item() / (2.0 / (9 * 256)) ** 0.5 - 1) < 0.05
    assert torch.all(net.layer3[0].bn2.weight == 1) and torch.all(net.layer3[0].bn2.bias == 0)


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="torchvision is not installed")
def test_equal_to_torchvision():
    try:
        import torchvision
    except Exception as exc:  # wheels that do not match the installed torch fail to import
        pytest.skip(f"torchvision does not import: {exc}")
    for ours, theirs in [(resnet50(), torchvision.models.resnet50()), (resnet18(), torchvision.models.resnet18())]:
        ours.load_state_dict(theirs.state_dict(), strict=True)
        ours.eval(), theirs.eval()
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), theirs(x))

"""``linssl export``: a run's backbone under torchvision's ResNet key names and shapes.

torchvision does not import beside this torch build, so its ResNet is written here independently, from its
definition (torchvision/models/resnet.py: conv1, bn1, relu, maxpool, layer1..4 of BasicBlock / Bottleneck
with the stride on the first block of layers 2-4 — on the 3×3 conv of a Bottleneck — and downsample =
1×1 conv + BN where the shape changes, avgpool, fc), and checked against its documented parameter counts.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from linssl.cli import main as cli_main
from linssl.deep.config import DeepConfig
from linssl.deep.export import export_backbone, torchvision_differences, torchvision_key, torchvision_state_dict
from linssl.deep.loop import train
from linssl.deep.models import build_backbone
from linssl.errors import LinsslError

LAYOUT = {"resnet18": ("basic", (2, 2, 2, 2), 1), "resnet50": ("bottleneck", (3, 4, 6, 3), 4)}
#: torchvision's documented sizes (the model builders' docs): parameters, fc included
TORCHVISION_PARAMETERS = {"resnet18": 11_689_512, "resnet50": 25_557_032}
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def torchvision_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """Every state_dict key of torchvision.models.<arch>() with its shape (written from the architecture)."""
    kind, layers, expansion = LAYOUT[arch]
    shapes: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 7, 7)}

    def bn(prefix: str, channels: int) -> None:
        shapes.update({f"{prefix}.weight": (channels,), f"{prefix}.bias": (channels,),
                       f"{prefix}.running_mean": (channels,), f"{prefix}.running_var": (channels,),
                       f"{prefix}.num_batches_tracked": ()})

    bn("bn1", 64)
    inplanes = 64
    for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
        for j in range(blocks):
            stride = 2 if i > 0 and j == 0 else 1
            p = f"layer{i + 1}.{j}"
            if kind == "basic":
                shapes[f"{p}.conv1.weight"] = (planes, inplanes, 3, 3)
                bn(f"{p}.bn1", planes)
                shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                bn(f"{p}.bn2", planes)
            else:
                shapes[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
                bn(f"{p}.bn1", planes)
                shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                bn(f"{p}.bn2", planes)
                shapes[f"{p}.conv3.weight"] = (planes * expansion, planes, 1, 1)
                bn(f"{p}.bn3", planes * expansion)
            if stride != 1 or inplanes != planes * expansion:
                shapes[f"{p}.downsample.0.weight"] = (planes * expansion, inplanes, 1, 1)
                bn(f"{p}.downsample.1", planes * expansion)
            inplanes = planes * expansion
    shapes["fc.weight"] = (1000, 512 * expansion)
    shapes["fc.bias"] = (1000,)
    return shapes


@pytest.mark.parametrize("arch, tensors", [("resnet18", 62), ("resnet50", 161)])
def test_the_reference_has_torchvisions_documented_size(arch, tensors):
    """The reference above is itself checked: torchvision's parameter count and parameter tensors."""
    params = {k: s for k, s in torchvision_shapes(arch).items() if not k.endswith(BUFFERS)}
    assert len(params) == tensors
    assert sum(math.prod(s) for s in params.values()) == TORCHVISION_PARAMETERS[arch]


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_imagenet_stem_backbone_has_exactly_torchvisions_keys_and_shapes(arch):
    backbone = build_backbone(arch, 3, "imagenet")
    exported = torchvision_state_dict(backbone.state_dict())
    expected = {k: s for k, s in torchvision_shapes(arch).items() if not k.startswith("fc.")}
    assert {k: tuple(v.shape) for k, v in exported.items()} == expected
    fc = math.prod(torchvision_shapes(arch)["fc.weight"]) + 1000
    assert sum(p.numel() for p in backbone.parameters()) + fc == TORCHVISION_PARAMETERS[arch]
    assert torchvision_differences(arch, "imagenet", 3) == [torchvision_differences(arch, "imagenet", 3)[0]]


def test_cifar_stem_keeps_the_names_and_only_conv1_differs():
    exported = torchvision_state_dict(build_backbone("resnet18", 3, "cifar").state_dict())
    expected = {k: s for k, s in torchvision_shapes("resnet18").items() if not k.startswith("fc.")}
    assert exported.keys() == expected.keys()
    assert [k for k in expected if tuple(exported[k].shape) != expected[k]] == ["conv1.weight"]
    assert tuple(exported["conv1.weight"].shape) == (64, 3, 3, 3)
    notes = torchvision_differences("resnet18", "cifar", 3)
    assert any("(64, 3, 3, 3)" in n and "maxpool" in n for n in notes)


def test_key_mapping_rejects_foreign_keys():
    assert torchvision_key("layers.3.1.shortcut.1.running_var") == "layer4.1.downsample.1.running_var"
    assert torchvision_key("stem.1.num_batches_tracked") == "bn1.num_batches_tracked"
    for bad in ("projector.0.weight", "stem.2.weight", "layers.x.0.conv1.weight", "net.0.weight"):
        with pytest.raises(LinsslError):
            torchvision_key(bad)


# ------------------------------------------------- torchvision's ResNet, written from its definition


class TVBasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride, downsample):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + identity)


class TVBottleneck(nn.Module):
    def __init__(self, inplanes, planes, stride, downsample):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + identity)


class TVResNet(nn.Module):
    def __init__(self, arch):
        super().__init__()
        kind, layers, expansion = LAYOUT[arch]
        block = TVBasicBlock if kind == "basic" else TVBottleneck
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            stage = []
            for j in range(blocks):
                stride = 2 if i > 0 and j == 0 else 1
                down = None
                if stride != 1 or inplanes != planes * expansion:
                    down = nn.Sequential(nn.Conv2d(inplanes, planes * expansion, 1, stride, bias=False),
                                         nn.BatchNorm2d(planes * expansion))
                stage.append(block(inplanes, planes, stride, down))
                inplanes = planes * expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * expansion, 1000)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_torchvision_layout_loads_strictly_and_computes_the_same_features(arch):
    """Not only names: with fc replaced by Identity, the reference loads with strict=True and gives our
    backbone's features (the strides and shortcuts sit in the same places)."""
    torch.manual_seed(0)
    ours = build_backbone(arch, 3, "imagenet").eval()
    for module in ours.modules():  # non-trivial BN statistics, so the buffers' mapping matters too
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    reference = TVResNet(arch)
    reference.fc = nn.Identity()
    reference.load_state_dict(torchvision_state_dict(ours.state_dict()), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        # the same float32 operations in the same order: equal up to summation-order noise (1e-5 relative)
        torch.testing.assert_close(reference.eval()(x), ours(x), rtol=1e-5, atol=1e-5)


# ------------------------------------------------- the command on real runs


def tiny(run: Path, **overrides) -> DeepConfig:
    values = dict(dataset="digits", arch="small", width=4, proj_hidden=16, proj_dim=8, pred_hidden=16, epochs=1,
                  batch_size=256, knn_k=10, probe_epochs=5, progress=False, out=str(run), workers=0)
    values.update(overrides)
    return DeepConfig(**values)


def _one_line_error(argv, capsys) -> str:
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_export_linssl_format_and_one_line_refusals(tmp_path, capsys):
    torch.set_num_threads(1)
    run = tmp_path / "run"
    result = train(tiny(run))
    out = tmp_path / "backbone.pt"
    assert cli_main(["export", str(run), "--format", "linssl", "--out", str(out)]) == 0
    assert "small backbone" in capsys.readouterr().out
    state = torch.load(out, weights_only=True)
    assert state.keys() == result.online.backbone.state_dict().keys()
    for key, value in result.online.backbone.state_dict().items():
        assert torch.equal(state[key], value), key
    before = out.read_bytes()
    assert "--overwrite" in _one_line_error(["export", str(run), "--format", "linssl", "--out", str(out)], capsys)
    assert out.read_bytes() == before  # never clobbered
    assert cli_main(["export", str(run), "--format", "linssl", "--out", str(out), "--overwrite"]) == 0
    capsys.readouterr()
    assert "ResNet" in _one_line_error(["export", str(run), "--out", str(tmp_path / "tv.pt")], capsys)
    assert not (tmp_path / "tv.pt").exists()
    assert "own checkpoint" in _one_line_error(
        ["export", str(run), "--format", "linssl", "--out", str(run / "checkpoint.pt"), "--overwrite"], capsys)
    assert "does not exist" in _one_line_error(["export", str(tmp_path / "nope"), "--out", str(out)], capsys)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert "checkpoint" in _one_line_error(["export", str(tmp_path / "junk"), "--out", str(tmp_path / "j.pt")],
                                           capsys)
    assert "folder" in _one_line_error(["export", str(run), "--out", str(tmp_path)], capsys)


@pytest.mark.slow
def test_export_of_an_interrupted_resnet18_run_in_torchvision_names(tmp_path, capsys):
    """A real (1-epoch, interrupted) ResNet-18 run on digits: 1 input channel, ImageNet stem."""
    torch.set_num_threads(1)
    run = tmp_path / "run"
    result = train(tiny(run, arch="resnet18", stem="imagenet", epochs=2, knn_every=0, batch_size=512),
                   stop_after_epochs=1)
    out = tmp_path / "sub" / "backbone.pt"
    assert cli_main(["export", str(run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "interrupted at epoch 1 of 2" in printed and "11,170,240 parameters" in printed
    # torchvision's 11,689,512 − fc (512·1000 + 1000) − conv1's two missing input channels (2·64·7·7)
    assert "1 input channels" in printed
    state = torch.load(out, weights_only=True)
    expected = {k: s for k, s in torchvision_shapes("resnet18").items() if not k.startswith("fc.")}
    expected["conv1.weight"] = (64, 1, 7, 7)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    for key, value in result.online.backbone.state_dict().items():
        assert torch.equal(state[torchvision_key(key)], value), key
    with pytest.raises(LinsslError, match="exists"):
        export_backbone(run, out)

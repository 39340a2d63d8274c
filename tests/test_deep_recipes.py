"""Reference recipes, the flags generated from DeepConfig, and what the recipes needed from the trainer:
per-view augmentation, solarisation, non-affine projector BN, LARS defaults and clipping, lr scaling,
the STL-10 stem, and old runs' ``ema`` key."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from linssl.cli import main as cli_main
from linssl.deep import augment, datasets, flags
from linssl.deep.augment import AugmentConfig, BatchAugment, ViewPair, solarize
from linssl.deep.config import (
    DeepConfig,
    build_online,
    build_optimizer,
    config_fields,
    config_from_dict,
    peak_lr,
    view_configs,
)
from linssl.deep.lars import LARS
from linssl.deep.loop import train
from linssl.deep.models import mlp
from linssl.deep.recipes import load_recipe, recipe_names
from linssl.errors import LinsslError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

EXPECTED = {"directpred-stl10", "directcopy-stl10", "byol-cifar10", "directpred-cifar10", "directcopy-cifar10",
            "byol-cifar100", "directpred-cifar100", "directcopy-cifar100", "byol-imagenet"}
#: the predictor's own settings: the DirectPred / DirectCopy CIFAR variants may differ from BYOL's only here
PREDICTOR_KEYS = {"predictor", "pred_hidden", "norm", "eps", "rho", "freq", "recipe"}
#: flags of deep-train that are not settings of a run
NON_CONFIG_FLAGS = {"help", "config", "resume", "stop_after_epochs", "print_config"}
#: identity geometry and colour: only the operation under test changes the image
IDENTITY = AugmentConfig(out_size=16, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0,
                         gray_p=0.0, blur_p=0.0)
ATOL = 1e-5  # identity resampling is exact up to float32 rounding of affine_grid (see test_deep_augment)


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = cli_main(argv)
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _printed(argv: list[str], capsys) -> dict:
    code, out, err = _run(["deep-train", *argv, "--print-config"], capsys)
    assert code == 0, err
    return json.loads(out)


# --------------------------------------------------------------------------- recipes


def test_the_shipped_recipes_are_the_issues_list():
    assert set(recipe_names()) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_recipe_loads_resolves_and_prints_its_values_without_data(name, capsys, tmp_path):
    recipe = load_recipe(name)
    resolved = dataclasses.replace(config_from_dict(recipe.values, name), out=str(tmp_path / "run")).resolve()
    assert resolved.dataset in datasets.DATASETS
    printed = _printed(["--recipe", name, "--data-dir", str(tmp_path / "nowhere")], capsys)
    for key, value in recipe.values.items():
        assert printed[key] == (list(value) if isinstance(value, tuple) else value), key
    assert printed["recipe"] == name
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_recipe_value_names_its_source(name):
    """Each line of the [config] table carries a comment (the source, or 'unconfirmed')."""
    text = load_recipe(name).text
    body = text.split("[config]", 1)[1]
    lines = [line for line in body.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert lines and all("#" in line and line.split("#", 1)[1].strip() for line in lines)
    assert tomllib.loads(text)["source"]


def test_recipe_values_against_their_sources():
    """Spot checks of the values the issue names (BYOL paper, solo-learn, the DirectPred authors' code)."""
    byol = config_from_dict(load_recipe("byol-imagenet").values, "x").resolve(need_out=False)
    assert (byol.blur_p, byol.solarize_p, byol.jitter, byol.jitter_p, byol.gray_p) == (
        (1.0, 0.1), (0.0, 0.2), (0.4, 0.4, 0.2, 0.1), 0.8, 0.2)
    assert (byol.optimizer, byol.wd, byol.ema_momentum, byol.ema_schedule, byol.epochs, byol.warmup_epochs) == (
        "lars", 1.5e-6, 0.996, "cosine", 1000, 10.0)
    assert peak_lr(byol) == pytest.approx(0.2 * 4096 / 256) and byol.exclude_bn_bias_wd
    assert (byol.proj_hidden, byol.proj_dim, byol.pred_hidden) == (4096, 256, 4096)
    solo = config_from_dict(load_recipe("byol-cifar100").values, "x").resolve(need_out=False)
    assert (solo.jitter[2], solo.solarize_p, solo.blur_p, solo.stem, solo.lars_eta, solo.ema_momentum) == (
        0.2, (0.0, 0.2), (0.0, 0.0), "cifar", 0.02, 0.99)
    dp = config_from_dict(load_recipe("directpred-stl10").values, "x").resolve(need_out=False)
    assert (dp.stem, dp.proj_bn_affine, dp.blur_p, dp.lr, dp.wd, dp.optimizer, dp.exclude_bn_bias_wd) == (
        "imagenet", False, (1.0, 1.0), 0.03, 4e-4, "sgd", False)
    assert (dp.proj_hidden, dp.proj_dim, dp.rho, dp.eps, dp.freq) == (512, 128, 0.3, 0.01, 1)


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_directpred_and_directcopy_cifar_recipes_swap_only_the_predictor(dataset):
    byol = load_recipe(f"byol-{dataset}").values
    for rule in ("directpred", "directcopy"):
        other = load_recipe(f"{rule}-{dataset}").values
        changed = {k for k in set(byol) | set(other) if byol.get(k) != other.get(k)}
        assert changed <= PREDICTOR_KEYS and other["predictor"] == rule
    dc = load_recipe("directcopy-stl10").values
    dp = load_recipe("directpred-stl10").values
    assert {k for k in set(dc) | set(dp) if dc.get(k) != dp.get(k)} <= PREDICTOR_KEYS


def test_flags_and_config_file_override_a_recipe(tmp_path, capsys):
    printed = _printed(["--recipe", "byol-cifar10", "--epochs", "3", "--solarize-p", "0.5", "0.5"], capsys)
    assert printed["epochs"] == 3 and printed["solarize_p"] == [0.5, 0.5] and printed["lr"] == 1.0
    toml = tmp_path / "run.toml"
    toml.write_text('recipe = "byol-cifar10"\nepochs = 7\nema = 0.9\n')  # ema: the old name, still read
    printed = _printed(["--config", str(toml), "--lr", "0.5"], capsys)
    assert (printed["epochs"], printed["lr"], printed["ema_momentum"], printed["optimizer"]) == (7, 0.5, 0.9, "lars")
    printed = _printed(["--config", str(toml), "--recipe", "directpred-stl10"], capsys)  # the flag's recipe wins
    assert printed["dataset"] == "stl10" and printed["epochs"] == 7


def test_print_config_shows_the_derived_lr_and_views(capsys):
    code, out, err = _run(["deep-train", "--recipe", "byol-imagenet", "--batch-size", "512", "--print-config"], capsys)
    assert code == 0 and json.loads(out)["batch_size"] == 512
    assert "peak lr 0.4 (= 0.2 x 512 / 256)" in err
    assert "blur 1.0, solarize 0.0" in err and "blur 0.1, solarize 0.2" in err


def test_unknown_recipe_is_one_line_and_exit_2(tmp_path, capsys):
    code, _, err = _run(["deep-train", "--recipe", "simclr-mnist", "--print-config"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "simclr-mnist" in err
    toml = tmp_path / "run.toml"
    toml.write_text('recipe = "simclr-mnist"\n')
    code, _, err = _run(["deep-train", "--config", str(toml), "--print-config"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "unknown recipe 'simclr-mnist'" in err
    code, _, err = _run(["recipes", "simclr-mnist"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_linssl_recipes_lists_each_with_its_source_and_prints_one(capsys):
    code, out, _ = _run(["recipes"], capsys)
    assert code == 0
    for name in EXPECTED:
        assert name in out and load_recipe(name).source in out
    code, out, _ = _run(["recipes", "byol-imagenet"], capsys)
    assert code == 0 and out == load_recipe("byol-imagenet").text


# --------------------------------------------------------------------------- flags from DeepConfig


def _parser() -> argparse.ArgumentParser:
    from linssl.deep import cli_train

    parser = argparse.ArgumentParser()
    cli_train.configure(parser)
    return parser


def test_every_field_has_a_flag_and_every_flag_a_field():
    dests = {a.dest for a in _parser()._actions}
    assert dests - NON_CONFIG_FLAGS == set(config_fields())
    assert set(flags.FLAG_HELP) == set(config_fields())
    args = _parser().parse_args(["--no-proj-bn-affine", "--blur-p", "1", "0.1", "--jitter", "0.4", "0.4", "0.2", "0.1",
                                 "--ema-momentum", "0.99"])
    assert (args.proj_bn_affine, args.blur_p, args.jitter, args.ema_momentum) == (
        False, [1.0, 0.1], [0.4, 0.4, 0.2, 0.1], 0.99)
    assert args.epochs is None  # not given: the layers below decide
    with pytest.raises(SystemExit):
        _parser().parse_args(["--ema", "0.9"])  # one meaning per name: deep-train's is --ema-momentum


def test_dataset_and_norm_choices_come_from_their_registries(monkeypatch):
    monkeypatch.setitem(datasets.DATASETS, "tiny9", datasets.DatasetSpec("tiny9", 9, 1, 2, (0.5,), (0.5,)))
    assert _parser().parse_args(["--dataset", "tiny9"]).dataset == "tiny9"
    monkeypatch.setattr("linssl.predictors.NORMS", ("none", "spectral", "frobenius", "trace"))
    assert _parser().parse_args(["--norm", "trace"]).norm == "trace"


# --------------------------------------------------------------------------- what the recipes need


def test_solarize_formula():
    x = torch.tensor([0.0, 0.2, 0.49, 0.5, 0.8, 1.0])
    torch.testing.assert_close(solarize(x), torch.tensor([0.0, 0.2, 0.49, 0.5, 0.2, 0.0]))


def test_solarisation_probability_zero_and_one_on_a_fixed_input():
    images = torch.randint(0, 256, (6, 3, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    unit = images.float() / 255
    off = BatchAugment(IDENTITY)(images, torch.Generator().manual_seed(1))
    on = BatchAugment(dataclasses.replace(IDENTITY, solarize_p=1.0))(images, torch.Generator().manual_seed(1))
    torch.testing.assert_close(off, unit, atol=ATOL, rtol=0)
    torch.testing.assert_close(on, torch.where(unit >= 0.5, 1 - unit, unit), atol=ATOL, rtol=0)


def test_views_without_solarisation_draw_the_same_stream_as_before():
    """solarize_p = 0 draws one rand(B, NUM_DRAWS), as before solarisation existed: old runs' views are kept."""
    gen, ref = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    BatchAugment(IDENTITY)(torch.zeros(5, 3, 16, 16), gen)
    torch.rand(5, augment.NUM_DRAWS, generator=ref, dtype=torch.float64)
    assert torch.equal(torch.rand(4, generator=gen), torch.rand(4, generator=ref))


def test_view_pair_applies_each_views_probabilities():
    """View 1 blur 1 / solarise 0, view 2 blur 0 / solarise 1 on a fixed input; p = 0.5 picks about half."""
    images = torch.randint(0, 256, (4, 3, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    unit = images.float() / 255
    pair = ViewPair(dataclasses.replace(IDENTITY, blur_p=1.0), dataclasses.replace(IDENTITY, solarize_p=1.0))
    v1, v2 = pair(images, torch.Generator().manual_seed(2))
    assert (v1 - unit).abs().max() > 0.05  # blurred
    torch.testing.assert_close(v2, solarize(unit), atol=ATOL, rtol=0)
    half = BatchAugment(dataclasses.replace(IDENTITY, solarize_p=0.5))
    flat = torch.full((4000, 1, 16, 16), 0.8)
    picked = (half(flat, torch.Generator().manual_seed(4))[:, 0, 0, 0] < 0.5).float().mean().item()
    # Binomial(4000, 0.5): sd 0.0079, so 0.5 ± 0.04 is a 5-sigma band
    assert abs(picked - 0.5) < 0.04


def test_recipe_views_reach_the_augmentations():
    cfg = DeepConfig(dataset="imagenet", blur_p=(1.0, 0.1), solarize_p=(0.0, 0.2), jitter=(0.4, 0.4, 0.2, 0.1))
    v1, v2 = view_configs(cfg.resolve(need_out=False))
    assert (v1.blur_p, v1.solarize_p, v2.blur_p, v2.solarize_p) == (1.0, 0.0, 0.1, 0.2)
    assert v1.jitter == v2.jitter == (0.4, 0.4, 0.2, 0.1)
    plain = view_configs(DeepConfig(dataset="stl10").resolve(need_out=False))
    assert plain[0] == plain[1] == dataclasses.replace(augment.preset("stl10"), jitter_order="random")
    with pytest.raises(LinsslError, match="--blur-p"):
        DeepConfig(dataset="stl10", out="x", blur_p=(1.5, 0.1)).resolve()


def test_non_affine_projector_bn_has_no_parameters():
    bn = mlp(8, 16, 4, bn_affine=False)[1]
    assert isinstance(bn, nn.BatchNorm1d) and list(bn.parameters()) == []
    cfg = DeepConfig(dataset="digits", arch="small", width=4, proj_hidden=16, proj_dim=8, proj_bn_affine=False)
    online = build_online(cfg.resolve(need_out=False), 1)
    affine = build_online(dataclasses.replace(cfg, proj_bn_affine=True).resolve(need_out=False), 1)
    count = lambda net: sum(p.numel() for p in net.projector.parameters())  # noqa: E731
    assert count(affine) - count(online) == 2 * 16  # BN scale and shift of the 16 hidden units


def test_lars_excludes_bn_and_bias_from_weight_decay_by_default_sgd_does_not():
    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    lars = build_optimizer(net, DeepConfig(dataset="cifar10", optimizer="lars", wd=1e-3).resolve(need_out=False))
    sgd = build_optimizer(net, DeepConfig(dataset="cifar10", optimizer="sgd", wd=1e-3).resolve(need_out=False))
    assert [g["weight_decay"] for g in lars.param_groups] == [1e-3, 0.0]
    assert [g["weight_decay"] for g in sgd.param_groups] == [1e-3, 1e-3]  # the DirectPred authors' SGD
    forced = DeepConfig(dataset="cifar10", optimizer="lars", wd=1e-3, exclude_bn_bias_wd=False)
    assert build_optimizer(net, forced.resolve(need_out=False)).param_groups[1]["weight_decay"] == 1e-3


def test_lars_clip_caps_the_layer_rate_at_lr():
    """clip: q = min(c |w| / |g| / lr, 1); one step from zero momentum moves w by lr q g."""
    for clip, lr, expected_q in ((False, 0.5, 0.1 * 2 / 1), (True, 0.5, min(0.1 * 2 / 1 / 0.5, 1.0)),
                                 (True, 0.01, 1.0)):
        w = nn.Parameter(torch.tensor([2.0, 0.0]))
        w.grad = torch.tensor([0.0, 1.0])
        LARS([w], lr=lr, momentum=0.9, trust_coefficient=0.1, clip_lr=clip).step()
        torch.testing.assert_close(w.detach(), torch.tensor([2.0, -lr * expected_q]))


def test_linear_lr_scaling():
    cfg = DeepConfig(dataset="cifar10", lr=0.3, batch_size=1024, lr_scaling="linear")
    assert peak_lr(cfg) == pytest.approx(0.3 * 1024 / 256)
    assert peak_lr(dataclasses.replace(cfg, lr_scaling="none")) == 0.3
    net = nn.Linear(2, 2)
    assert build_optimizer(net, cfg.resolve(need_out=False)).param_groups[0]["lr"] == pytest.approx(1.2)


def test_stem_auto_follows_the_image_size():
    """The authors' code and solo-learn swap in the CIFAR stem for CIFAR only: STL-10 gets the ImageNet stem."""
    stems = {name: DeepConfig(dataset=name).resolve(need_out=False).stem for name in datasets.DATASETS}
    assert stems == {"stl10": "imagenet", "imagenet": "imagenet", "cifar10": "cifar", "cifar100": "cifar",
                     "digits": "cifar"}


def test_a_run_with_every_recipe_feature_trains_and_resumes_bit_for_bit(tmp_path):
    """Asymmetric blur and solarisation, non-affine projector BN, clipped LARS and linear lr scaling in one
    digits run: the lr it uses is lr x batch / 256, and a resumed run repeats an uninterrupted one exactly."""
    base = dict(dataset="digits", arch="small", width=4, proj_hidden=16, proj_dim=8, epochs=2, batch_size=256,
                knn_k=10, probe_epochs=5, progress=False, workers=0, optimizer="lars", lars_eta=0.02, lars_clip=True,
                lr=0.1, lr_scaling="linear", proj_bn_affine=False, blur_p=(1.0, 0.1), solarize_p=(0.0, 0.2))
    straight = train(DeepConfig(**base, out=str(tmp_path / "a")))
    assert [m["lr"] for m in straight.metrics] == [pytest.approx(0.1 * 256 / 256)] * 2
    assert all(math.isfinite(m["loss"]) for m in straight.metrics)
    resumed_cfg = DeepConfig(**base, out=str(tmp_path / "b"))
    train(resumed_cfg, stop_after_epochs=1)
    resumed = train(resumed_cfg, resume=True)
    for a, b in zip(straight.online.state_dict().values(), resumed.online.state_dict().values(), strict=True):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------- old runs


def test_a_run_saved_with_ema_and_without_the_new_settings_resumes(tmp_path):
    """Runs saved before the rename say ``ema`` and lack the recipe-era settings: --resume reads them."""
    out = tmp_path / "run"
    cfg = DeepConfig(dataset="digits", arch="small", width=4, proj_hidden=16, proj_dim=8, epochs=2, batch_size=256,
                     knn_k=10, probe_epochs=5, progress=False, out=str(out), workers=0, ema_momentum=0.99)
    train(cfg, stop_after_epochs=1)
    new = ("ema_momentum", "recipe", "proj_bn_affine", "lr_scaling", "lars_eta", "lars_clip", "jitter", "jitter_p",
           "gray_p", "blur_p", "solarize_p")

    def make_old(config: dict) -> dict:
        return {**{k: v for k, v in config.items() if k not in new}, "ema": config["ema_momentum"]}

    (out / "config.json").write_text(json.dumps(make_old(json.loads((out / "config.json").read_text()))))
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    checkpoint["config"] = make_old(checkpoint["config"])
    for group in checkpoint["optimizer"]["param_groups"]:
        group.pop("clip_lr", None)
    torch.save(checkpoint, out / "checkpoint.pt")
    assert cli_main(["deep-train", "--resume", "--out", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["ema_momentum"] == 0.99 and "ema" not in saved and saved["proj_bn_affine"] is True
    assert math.isfinite(json.loads((out / "summary.json").read_text())["linear_top1"])
    # another recipe on --resume would be silently replaced by the saved values: refused, one line
    assert cli_main(["deep-train", "--resume", "--out", str(out), "--recipe", "byol-cifar10"]) == 2
    with pytest.raises(LinsslError, match="ema_momentum"):
        config_from_dict({"ema": 0.9, "ema_momentum": 0.9}, "x.toml")  # one value per setting


def test_recipe_files_ship_in_the_package():
    import linssl.deep

    folder = Path(linssl.deep.__file__).parent / "recipes"
    assert {p.stem for p in folder.glob("*.toml")} == EXPECTED
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert "recipes/*.toml" in pyproject["tool"]["setuptools"]["package-data"]["linssl.deep"]

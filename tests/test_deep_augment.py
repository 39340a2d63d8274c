"""Batched augmentations: exact identities, invariants of each operation, determinism, speed."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from linssl.deep import augment
from linssl.deep.augment import AugmentConfig, BatchAugment, eval_transform, preset
from linssl.deep.datasets import DATASETS
from linssl.errors import LinsslError

#: everything random switched off: the view must be the normalised input
IDENTITY = AugmentConfig(out_size=32, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0,
                         gray_p=0.0, blur_p=0.0)
# affine_grid's pixel-centre coordinates at identity are exact up to float32 rounding (~1e-7), so the
# bilinear weights differ from (1, 0) by ~1e-6 and a [0, 1] image changes by at most ~1e-6; dividing
# by a std >= 0.2 gives < 1e-5.
ATOL = 1e-5


def _images(batch: int = 8, channels: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, channels, size, size), generator=gen, dtype=torch.uint8)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_presets_follow_the_recipe_of_theory_section_6():
    for name, spec in DATASETS.items():
        cfg = preset(name)
        assert cfg.out_size == spec.image_size and cfg.mean == spec.mean and cfg.std == spec.std
    assert preset("cifar10").jitter == (0.4, 0.4, 0.4, 0.1) and preset("cifar100").blur_p == 0
    assert preset("stl10").jitter == (0.8, 0.8, 0.8, 0.2) and preset("stl10").blur_p == 0.5
    assert preset("stl10").kernel_size == 9 and preset("imagenet").kernel_size == 21  # ~10% of the side, odd
    assert preset("imagenet").jitter == (0.4, 0.4, 0.2, 0.1)
    digits = preset("digits")
    assert (digits.out_size, digits.crop_scale, digits.flip_p, digits.gray_p) == (8, (0.5, 1.0), 0.0, 0.0)
    assert digits.jitter[2:] == (0.0, 0.0)
    with pytest.raises(LinsslError, match="unknown dataset"):
        preset("svhn")
    with pytest.raises(LinsslError, match="crop scale"):
        AugmentConfig(out_size=8, crop_scale=(0.5, 1.5))
    with pytest.raises(LinsslError, match="gray_p"):
        AugmentConfig(out_size=8, gray_p=2.0)


def test_output_shape_dtype_range():
    cfg = replace(preset("stl10"), out_size=24)
    images = _images(6, size=40)
    out = BatchAugment(cfg)(images, _gen(0))
    assert out.shape == (6, 3, 24, 24) and out.dtype == torch.float32
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    unit = out * std + mean
    # every step is a convex combination or a clamp of [0, 1] values; 1e-5 covers float rounding
    assert unit.min() >= -1e-5 and unit.max() <= 1 + 1e-5
    # float input in [0, 1] is treated like the uint8 image / 255
    same = BatchAugment(cfg)(images.float() / 255, _gen(0))
    torch.testing.assert_close(same, out, atol=ATOL, rtol=0)


def test_identity_settings_reproduce_normalised_input():
    images = _images()
    cfg = replace(IDENTITY, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    out = BatchAugment(cfg)(images, _gen(1))
    expected = (images.float() / 255 - torch.tensor(cfg.mean).view(1, 3, 1, 1)) / torch.tensor(cfg.std).view(1, 3, 1, 1)
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(eval_transform(images, cfg), expected, atol=1e-6, rtol=0)


def test_flip_flips():
    images = _images()
    out = BatchAugment(replace(IDENTITY, flip_p=1.0))(images, _gen(2))
    torch.testing.assert_close(out, images.float().flip(-1) / 255, atol=ATOL, rtol=0)


def test_grayscale_gives_equal_channels_with_luma():
    images = _images()
    out = BatchAugment(replace(IDENTITY, gray_p=1.0))(images, _gen(3))
    luma = (0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]).float() / 255
    for c in range(3):
        torch.testing.assert_close(out[:, c], luma, atol=ATOL, rtol=0)


def test_same_seed_same_views_different_seed_different_views():
    images = _images()
    aug = BatchAugment(preset("cifar10"))
    torch.testing.assert_close(aug(images, _gen(7)), aug(images, _gen(7)), atol=0, rtol=0)
    assert not torch.allclose(aug(images, _gen(7)), aug(images, _gen(8)))
    torch.manual_seed(3)  # without a generator the global RNG is used
    first = aug(images)
    torch.manual_seed(3)
    torch.testing.assert_close(aug(images), first, atol=0, rtol=0)


def test_each_sample_gets_its_own_crop():
    one = _images(1)
    out = BatchAugment(replace(preset("cifar10"), jitter_p=0.0, gray_p=0.0))(one.expand(16, -1, -1, -1), _gen(4))
    flat = out.reshape(16, -1)
    distances = torch.cdist(flat, flat) + torch.eye(16) * 1e9
    assert distances.min() > 1.0  # no two views of the same image coincide


def test_crop_params_stay_inside_and_respect_scale_and_ratio():
    cfg = AugmentConfig(out_size=32, crop_scale=(0.2, 0.6), crop_ratio=(0.5, 2.0))
    u = torch.rand(4000, augment.NUM_DRAWS, generator=_gen(5), dtype=torch.float64)
    w, h, cx, cy, flip = augment.crop_params(u, 48, 64, cfg).unbind(1)
    area = w * h
    ratio = (w * 64) / (h * 48)  # width / height in pixels
    assert area.min() >= 0.2 - 1e-9 and area.max() <= 0.6 + 1e-9
    assert ratio.min() >= 0.5 - 1e-9 and ratio.max() <= 2.0 + 1e-9
    assert (cx.abs() + w).max() <= 1 + 1e-9 and (cy.abs() + h).max() <= 1 + 1e-9
    # default flip_p 0.5 over 4000 samples: 6 standard deviations is 0.047
    assert abs((flip < 0).double().mean() - 0.5) < 0.05
    # impossible crops fall back to the whole image (scale 1 and ratio 2 on a square cannot fit)
    wide = AugmentConfig(out_size=8, crop_scale=(1.0, 1.0), crop_ratio=(2.0, 2.0))
    w, h, cx, cy, _ = augment.crop_params(u[:5], 32, 32, wide).unbind(1)
    torch.testing.assert_close(torch.stack([w, h, cx, cy]), torch.tensor([[1.0] * 5, [0.5] * 5, [0.0] * 5, [0.0] * 5],
                                                                         dtype=torch.float64))


def test_crop_samples_the_right_region():
    """A centred half-size crop of a 32 px image, upsampled back to 16 px, is the central 16×16 block."""
    images = _images(2, size=32).float() / 255
    params = torch.tensor([[0.5, 0.5, 0.0, 0.0, 1.0]] * 2, dtype=torch.float64)
    out = augment.crop_and_flip(images, params, 16)
    torch.testing.assert_close(out, images[:, :, 8:24, 8:24], atol=ATOL, rtol=0)


def test_brightness_scales_and_hue_round_trip():
    x = torch.rand(4, 3, 8, 8, generator=_gen(6)) * 0.5  # below 1/1.5: no clipping at b <= 1.5
    factors = torch.tensor([[1.5, 1.0, 1.0, 0.0], [0.5, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0], [1.2, 1.0, 1.0, 0.0]])
    out = augment.color_jitter(x, factors)
    # HSV round trip of a zero hue shift costs float32 rounding only (~1e-7 per op)
    torch.testing.assert_close(out, x * factors[:, 0].view(-1, 1, 1, 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(augment.hsv_to_rgb(augment.rgb_to_hsv(x)), x, atol=1e-6, rtol=0)


def test_random_jitter_order_applies_each_samples_own_permutation():
    """order[i] = (2, 0, 3, 1) means saturation, brightness, hue, contrast for sample i: the batched
    result equals the four fixed-order single operations applied to that image in that order."""
    import itertools

    perms = list(itertools.permutations(range(4)))
    x = torch.rand(len(perms), 3, 6, 6, generator=_gen(11))
    factors = torch.tensor([[1.3, 0.6, 1.4, 0.15]]).expand(len(perms), 4)
    order = torch.tensor(perms)
    out = augment.color_jitter(x, factors, order)
    identity = [1.0, 1.0, 1.0, 0.0]
    for i, perm in enumerate(perms):
        expected = x[i:i + 1]
        for j in perm:  # one operation at a time: the others at their identity factor
            single = torch.tensor([identity[:j] + [factors[0, j].item()] + identity[j + 1:]])
            expected = augment.color_jitter(expected, single, active=tuple(k == j for k in range(4)))
        torch.testing.assert_close(out[i:i + 1], expected, atol=1e-6, rtol=0)  # float32 rounding only
    # the order matters here (brightness clips before or after contrast): not all 24 agree
    assert not all(torch.allclose(out[0], out[k], atol=1e-3) for k in range(1, len(perms)))


def test_jitter_orders_are_uniform_over_permutations():
    """argsort of four uniforms: each of the 24 orders has probability 1/24."""
    u = torch.rand(24_000, augment.NUM_DRAWS, generator=_gen(12), dtype=torch.float64)
    order = torch.argsort(u[:, augment._ORDER], dim=1)
    codes = (order * torch.tensor([64, 16, 4, 1])).sum(1)
    counts = torch.unique(codes, return_counts=True)[1]
    # 1000 expected per order, sd ≈ 31: 6 sd either side
    assert counts.numel() == 24 and counts.min() > 810 and counts.max() < 1190


def test_hue_rotation_and_saturation():
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    green = augment.color_jitter(red, torch.tensor([[1.0, 1.0, 1.0, 1 / 3]]))
    torch.testing.assert_close(green[0, :, 0, 0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-6, rtol=0)
    gray_out = augment.color_jitter(red, torch.tensor([[1.0, 1.0, 0.0, 0.0]]))  # saturation 0 -> grey
    torch.testing.assert_close(gray_out[0, :, 0, 0], torch.full((3,), 0.299), atol=1e-6, rtol=0)
    # contrast 0: every pixel becomes the image's mean grey level
    x = torch.rand(2, 3, 4, 4, generator=_gen(9))
    flat = augment.color_jitter(x, torch.tensor([[1.0, 0.0, 1.0, 0.0]] * 2))
    expected = augment.grayscale(x).mean(dim=(1, 2, 3))
    torch.testing.assert_close(flat.amax(dim=(1, 2, 3)), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(flat.amin(dim=(1, 2, 3)), expected, atol=1e-6, rtol=0)


def test_one_channel_images_skip_colour_ops():
    images = _images(5, channels=1, size=8)
    # saturation, hue and grayscale always on: a 1-channel image must pass through unchanged
    cfg = replace(IDENTITY, out_size=8, jitter=(0.0, 0.0, 0.8, 0.4), jitter_p=1.0, gray_p=1.0)
    torch.testing.assert_close(BatchAugment(cfg)(images, _gen(10)), images.float() / 255, atol=ATOL, rtol=0)
    # brightness still applies: every image is scaled by its own factor in [0.6, 1.4]
    bright = BatchAugment(replace(cfg, jitter=(0.4, 0.0, 0.0, 0.0)))(images // 2, _gen(10))
    ratio = bright.sum(dim=(1, 2, 3)) / (images // 2).float().div(255).sum(dim=(1, 2, 3))
    assert ratio.min() >= 0.6 - 1e-5 and ratio.max() <= 1.4 + 1e-5 and ratio.std() > 0.01


def test_blur_matches_a_direct_2d_gaussian_convolution():
    x = torch.rand(3, 3, 20, 20, generator=_gen(11), dtype=torch.float64)
    sigma = torch.tensor([0.3, 1.0, 2.0], dtype=torch.float64)
    out = augment.gaussian_blur(x, sigma, 7)
    for i in range(3):
        k1 = torch.exp(-(torch.arange(7, dtype=torch.float64) - 3) ** 2 / (2 * sigma[i] ** 2))
        k2 = torch.outer(k1, k1) / k1.sum() ** 2
        padded = F.pad(x[i:i + 1], (3, 3, 3, 3), mode="reflect")
        ref = F.conv2d(padded, k2.expand(3, 1, 7, 7).contiguous(), groups=3)
        torch.testing.assert_close(out[i:i + 1], ref, atol=1e-12, rtol=0)
    constant = torch.full((2, 3, 9, 9), 0.25)
    torch.testing.assert_close(augment.gaussian_blur(constant, torch.tensor([0.5, 2.0]), 5), constant)


def test_blur_probability_is_per_sample():
    images = _images(64)
    base = replace(IDENTITY, blur_sigma=(1.5, 2.0))
    out = BatchAugment(replace(base, blur_p=0.5))(images, _gen(12))
    plain = images.float() / 255
    changed = (out - plain).abs().amax(dim=(1, 2, 3)) > 1e-3
    # 64 fair coins: 6 standard deviations (4 each) around 32
    assert 8 <= int(changed.sum()) <= 56


def test_eval_transform_resizes_and_crops():
    cfg = AugmentConfig(out_size=16)
    # a horizontal linear ramp on a 32×48 image: shorter side 32 -> 16 (width 48 -> 24), centre crop
    # keeps input columns 8..40; output column k is centred at input coordinate 2k + 8.5, and the
    # symmetric antialiasing filter reproduces a linear function exactly away from the borders
    ramp = (torch.arange(48, dtype=torch.float32) / 47).expand(2, 3, 32, 48)
    out = eval_transform(ramp, cfg)
    assert out.shape == (2, 3, 16, 16)
    expected = ((2 * torch.arange(16, dtype=torch.float32) + 8.5) / 47).expand(2, 3, 16, 16)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    tall = torch.rand(1, 1, 40, 8, generator=_gen(13))
    assert eval_transform(tall, AugmentConfig(out_size=8)).shape == (1, 1, 8, 8)
    torch.testing.assert_close(eval_transform(tall, AugmentConfig(out_size=8)), tall[:, :, 16:24], atol=0, rtol=0)


def test_one_batched_call_per_operation():
    """No loop over samples: a 256-image batch costs one grid_sample and two (grouped) convolutions
    (the operation counts say it; the time is the benchmarks' business, not a test's)."""
    from torch.profiler import profile

    images = _images(256, size=32)
    aug = BatchAugment(replace(preset("cifar10"), blur_p=0.5))
    aug(images, _gen(0))  # warm-up
    with profile() as prof:
        out = aug(images, _gen(1))
    counts = {event.key: event.count for event in prof.key_averages()}
    assert counts.get("aten::grid_sampler_2d") == 1
    assert counts.get("aten::conv2d") == 2
    assert out.shape == (256, 3, 32, 32) and math.isfinite(float(out.sum()))

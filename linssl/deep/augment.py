"""Batched image augmentations on the training device (SimCLR/BYOL views, docs/theory.md §6).

One call augments a whole batch with per-sample randomness drawn in one go (no loop over samples):

1. random resized crop + horizontal flip as one affine grid per sample (``F.affine_grid`` +
   ``F.grid_sample``, bilinear): output pixel (x, y) in [-1, 1]² reads input
   (f·w·x + c_x, h·y + c_y), w, h the crop's width/height fractions, f = ±1 the flip;
2. colour jitter with probability ``jitter_p``: brightness, contrast, saturation, hue in a random
   order per sample (as torchvision's ColorJitter and BYOL; ``jitter_order="fixed"`` keeps that order)
   with torchvision's factors: b ~ U[1−β, 1+β] multiplies; contrast/saturation blend with the mean
   grey level / the grey image; hue shifts H of HSV by U[−δ, δ];
3. grayscale with probability ``gray_p`` (luma 0.299 R + 0.587 G + 0.114 B);
4. Gaussian blur with probability ``blur_p``, σ ~ U[σ_min, σ_max] per sample, separable,
   reflect-padded, as a grouped convolution with one kernel per sample;
5. solarisation with probability ``solarize_p``: x ← 1 − x where x ≥ 0.5 (BYOL);
6. normalisation (x − mean) / std.

Colour operations are skipped for 1-channel images except brightness and contrast. Randomness is
drawn on the CPU from ``generator`` (one ``torch.rand(B, 35)``; row i drives sample i, and one more
``torch.rand(B)`` after it only when ``solarize_p > 0``, so views without solarisation draw what they
always drew) and moved to the images' device, so a seed gives the same views on any device up to float
rounding. ``ViewPair`` draws the two views of a step one after the other, each with its own config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from linssl.errors import LinsslError

CROP_TRIES = 10
LUMA = (0.299, 0.587, 0.114)

# columns of the per-sample uniform draws
_AREA = slice(0, CROP_TRIES)
_RATIO = slice(CROP_TRIES, 2 * CROP_TRIES)
_CENTER = slice(2 * CROP_TRIES, 2 * CROP_TRIES + 2)
_FLIP = 2 * CROP_TRIES + 2
_JITTER_P = _FLIP + 1
_JITTER = slice(_JITTER_P + 1, _JITTER_P + 5)
_GRAY = _JITTER_P + 5
_BLUR_P = _GRAY + 1
_SIGMA = _BLUR_P + 1
_ORDER = slice(_SIGMA + 1, _SIGMA + 5)  # their ranks give the jitter order
NUM_DRAWS = _SIGMA + 5
JITTER_ORDERS = ("random", "fixed")


@dataclass(frozen=True)
class AugmentConfig:
    """One view's augmentation. ``jitter`` = (brightness, contrast, saturation, hue) strengths;
    ``blur_kernel`` 0 picks an odd kernel of about 10% of ``out_size``; mean/std of length 1
    apply to every channel (the defaults (0,), (1,) leave values in [0, 1])."""

    out_size: int
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float = 0.0
    solarize_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    blur_kernel: int = 0
    jitter_order: str = "random"

    def __post_init__(self) -> None:
        lo, hi = self.crop_scale
        if self.out_size < 1:
            raise LinsslError(f"augmentation out_size must be positive, got {self.out_size}")
        if not 0 < lo <= hi <= 1:
            raise LinsslError(f"crop scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise LinsslError(f"crop ratio must satisfy 0 < min <= max, got {self.crop_ratio}")
        for name in ("flip_p", "jitter_p", "gray_p", "blur_p", "solarize_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise LinsslError(f"augmentation {name} must lie in [0, 1], got {getattr(self, name)}")
        if len(self.jitter) != 4 or min(self.jitter) < 0 or self.jitter[3] > 0.5:
            raise LinsslError(f"jitter strengths must be >= 0 with hue <= 0.5, got {self.jitter}")
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise LinsslError(f"blur sigma must satisfy 0 < min <= max, got {self.blur_sigma}")
        if len(self.mean) != len(self.std) or min(self.std) <= 0:
            raise LinsslError(f"mean/std must have equal lengths and positive std, got {self.mean}, {self.std}")
        if self.jitter_order not in JITTER_ORDERS:
            raise LinsslError(f"jitter order must be one of {', '.join(JITTER_ORDERS)}, got {self.jitter_order!r}")
        if self.blur_kernel < 0 or (self.blur_kernel and self.blur_kernel % 2 == 0):
            raise LinsslError(f"blur kernel must be odd (or 0 for automatic), got {self.blur_kernel}")

    @property
    def kernel_size(self) -> int:
        """Blur kernel side: ``blur_kernel``, else the odd number nearest below 10% of ``out_size`` (>= 3)."""
        if self.blur_kernel:
            return self.blur_kernel
        k = int(0.1 * self.out_size)
        return max(3, k if k % 2 else k - 1)


def preset(dataset: str) -> AugmentConfig:
    """docs/theory.md §6 augmentations per dataset, normalised with the dataset's mean/std."""
    from linssl.deep.datasets import get_spec

    spec = get_spec(dataset)
    norm = {"mean": spec.mean, "std": spec.std}
    if dataset in ("cifar10", "cifar100"):
        return AugmentConfig(out_size=32, jitter=(0.4, 0.4, 0.4, 0.1), blur_p=0.0, **norm)
    if dataset == "stl10":
        return AugmentConfig(out_size=96, jitter=(0.8, 0.8, 0.8, 0.2), blur_p=0.5, **norm)
    if dataset == "imagenet":
        return AugmentConfig(out_size=224, jitter=(0.4, 0.4, 0.2, 0.1), blur_p=0.5, **norm)
    if dataset == "digits":  # 8 px, one channel, not flip-invariant
        return AugmentConfig(out_size=8, crop_scale=(0.5, 1.0), flip_p=0.0, jitter=(0.4, 0.4, 0.0, 0.0),
                             gray_p=0.0, blur_p=0.0, **norm)
    return preset_for(spec)


def preset_for(spec) -> AugmentConfig:
    """Augmentations for images the registry does not know (``linssl.deep.train`` on the user's data):
    the CIFAR preset up to 64 px, the STL-10 one (stronger jitter, blur) above; colour operations only
    for three channels; normalised with ``spec``'s measured mean/std."""
    norm = {"mean": spec.mean, "std": spec.std}
    colour = {} if spec.channels == 3 else {"jitter": (0.4, 0.4, 0.0, 0.0), "gray_p": 0.0}
    if spec.image_size <= 64:
        return AugmentConfig(**{"out_size": spec.image_size, "jitter": (0.4, 0.4, 0.4, 0.1), "blur_p": 0.0,
                                **colour, **norm})
    return AugmentConfig(**{"out_size": spec.image_size, "jitter": (0.8, 0.8, 0.8, 0.2), "blur_p": 0.5,
                            **colour, **norm})


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 in 0..255 -> float32 / 255; float input is taken to lie in [0, 1] already."""
    if images.ndim != 4:
        raise LinsslError(f"expected a batch of images (B, C, H, W), got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """(x − mean_c) / std_c per channel c."""
    channels = images.shape[1]
    if len(mean) not in (1, channels):
        raise LinsslError(f"normalisation has {len(mean)} channel means for {channels}-channel images")
    m = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - m) / s


# ---------------------------------------------------------------- geometry


def crop_params(u: torch.Tensor, height: int, width: int, cfg: AugmentConfig) -> torch.Tensor:
    """Random-resized-crop + flip parameters from uniforms ``u`` (B, NUM_DRAWS): rows (w, h, c_x, c_y, f).

    Each try draws area fraction s ~ U[scale] and log aspect ratio ~ U[log ratio]; the crop has
    width fraction w = sqrt(s·r·H/W), height fraction h = sqrt(s·W/(r·H)) (in pixels: area s·H·W,
    width/height = r).
    The first try with w, h <= 1 is used; if none fits, the whole image with the ratio clamped to
    the range, centred (torchvision's fallback). Otherwise the centre is uniform over the positions that
    keep the crop inside the image.
    """
    lo, hi = cfg.crop_scale
    log_lo, log_hi = math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])
    area = lo + (hi - lo) * u[:, _AREA]
    ratio = torch.exp(log_lo + (log_hi - log_lo) * u[:, _RATIO])
    w = torch.sqrt(area * ratio * height / width)
    h = torch.sqrt(area / ratio * width / height)
    fits = (w <= 1) & (h <= 1)
    first = torch.argmax(fits.to(torch.uint8), dim=1, keepdim=True)  # index of the first fitting try
    any_fit = fits.any(dim=1)
    in_ratio = width / height
    fb_w = 1.0 if in_ratio <= cfg.crop_ratio[1] else height * cfg.crop_ratio[1] / width
    fb_h = 1.0 if in_ratio >= cfg.crop_ratio[0] else width / (cfg.crop_ratio[0] * height)
    w = torch.where(any_fit, w.gather(1, first).squeeze(1), torch.full_like(any_fit, fb_w, dtype=u.dtype))
    h = torch.where(any_fit, h.gather(1, first).squeeze(1), torch.full_like(any_fit, fb_h, dtype=u.dtype))
    centred = any_fit.to(u.dtype)  # the fallback crop is centred
    cx = (2 * u[:, _CENTER][:, 0] - 1) * (1 - w) * centred
    cy = (2 * u[:, _CENTER][:, 1] - 1) * (1 - h) * centred
    flip = torch.where(u[:, _FLIP] < cfg.flip_p, -1.0, 1.0).to(u.dtype)
    return torch.stack([w, h, cx, cy, flip], dim=1)


def crop_and_flip(images: torch.Tensor, params: torch.Tensor, out_size: int) -> torch.Tensor:
    """Bilinear resample of each image's crop to out_size², via θ = [[f·w, 0, c_x], [0, h, c_y]]."""
    w, h, cx, cy, flip = params.to(images.device, images.dtype).unbind(1)
    zero = torch.zeros_like(w)
    theta = torch.stack([torch.stack([flip * w, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1)
    grid = F.affine_grid(theta, [images.shape[0], images.shape[1], out_size, out_size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


# ---------------------------------------------------------------- colour


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """Luma 0.299 R + 0.587 G + 0.114 B, shape (B, 1, H, W)."""
    r, g, b = images.unbind(1)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1)


def rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] -> HSV in [0, 1] (hue as a fraction of the colour circle)."""
    r, g, b = images.unbind(1)
    maxc, _ = images.max(dim=1)
    minc, _ = images.min(dim=1)
    chroma = maxc - minc
    sat = chroma / torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    hue = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.remainder(hue / 6.0, 1.0)
    hue = torch.where(chroma > 0, hue, torch.zeros_like(hue))
    return torch.stack([hue, sat, maxc], dim=1)


def hsv_to_rgb(images: torch.Tensor) -> torch.Tensor:
    """HSV in [0, 1] -> RGB in [0, 1] (the six sectors of the hexcone)."""
    h, s, v = images.unbind(1)
    h6 = torch.remainder(h, 1.0) * 6.0
    sector = torch.floor(h6)
    frac = h6 - sector
    sector = sector.long() % 6
    p = v * (1 - s)
    q = v * (1 - s * frac)
    t = v * (1 - s * (1 - frac))
    # per sector: (R, G, B) = (v,t,p) (q,v,p) (p,v,t) (p,q,v) (t,p,v) (v,p,q)
    table = torch.stack([
        torch.stack([v, q, p, p, t, v]),
        torch.stack([t, v, v, q, p, p]),
        torch.stack([p, p, t, v, v, q]),
    ])  # (3, 6, B, H, W)
    index = sector.unsqueeze(0).unsqueeze(0).expand(3, 1, *sector.shape)
    return table.gather(1, index).squeeze(1).transpose(0, 1)


def _brightness(x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (x * b).clamp_(0, 1)


def _contrast(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    gray = grayscale(x) if x.shape[1] == 3 else x
    return (c * x + (1 - c) * gray.mean(dim=(1, 2, 3), keepdim=True)).clamp_(0, 1)


def _saturation(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return (s * x + (1 - s) * grayscale(x)).clamp_(0, 1) if x.shape[1] == 3 else x


def _hue(x: torch.Tensor, dh: torch.Tensor) -> torch.Tensor:
    if x.shape[1] != 3:
        return x
    hsv = rgb_to_hsv(x)
    hsv = torch.cat([torch.remainder(hsv[:, :1] + dh, 1.0), hsv[:, 1:]], dim=1)
    return hsv_to_rgb(hsv).clamp_(0, 1)


_JITTER_OPS = (_brightness, _contrast, _saturation, _hue)


def color_jitter(images: torch.Tensor, factors: torch.Tensor, order: torch.Tensor | None = None,
                 active: tuple[bool, bool, bool, bool] = (True, True, True, True)) -> torch.Tensor:
    """Brightness, contrast, saturation, hue with per-sample ``factors`` (B, 4) = (b, c, s, Δh).

    x ← clip(b·x); x ← clip(c·x + (1 − c)·mean(gray(x))); x ← clip(s·x + (1 − s)·gray(x));
    hue ← hue + Δh (mod 1). Saturation and hue need 3 channels and are skipped otherwise.
    ``order`` (B, 4): sample i applies operation order[i, k] k-th (a permutation of 0..3; None: 0, 1, 2, 3).
    ``active[j]`` False skips operation j (strength 0: the identity), for speed.
    """
    fs = [f.view(-1, 1, 1, 1) for f in factors.to(images.device, images.dtype).unbind(1)]
    ops = [(j, op, f) for j, (op, f, on) in enumerate(zip(_JITTER_OPS, fs, active, strict=True)) if on]
    x = images
    if order is None:
        for _, op, f in ops:
            x = op(x, f)
        return x
    for slot in range(4):  # every active operation on every sample, kept where it is this slot's
        which = order[:, slot].to(x.device).view(-1, 1, 1, 1)
        out = x
        for j, op, f in ops:
            out = torch.where(which == j, op(x, f), out)
        x = out
    return x


def jitter_factors(u: torch.Tensor, strengths: tuple[float, float, float, float]) -> torch.Tensor:
    """Map uniforms (B, 4) to factors: b, c, s ~ U[max(0, 1 − β), 1 + β], Δh ~ U[−δ, δ]."""
    lows = [max(0.0, 1 - v) for v in strengths[:3]] + [-strengths[3]]
    highs = [1 + v for v in strengths[:3]] + [strengths[3]]
    # Python numbers, not a tensor: no host-to-device copy (and no synchronisation) on a GPU
    return torch.stack([lo + (hi - lo) * u[:, k] for k, (lo, hi) in enumerate(zip(lows, highs, strict=True))], 1)


# ---------------------------------------------------------------- blur


def gaussian_kernels(sigma: torch.Tensor, size: int) -> torch.Tensor:
    """Normalised 1-D Gaussians (B, size): k_j ∝ exp(−j² / 2σ²), j = −size//2 .. size//2."""
    offsets = torch.arange(size, dtype=sigma.dtype, device=sigma.device) - size // 2
    kernels = torch.exp(-offsets.square() / (2 * sigma.view(-1, 1).square()))
    return kernels / kernels.sum(dim=1, keepdim=True)


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, size: int) -> torch.Tensor:
    """Separable Gaussian blur with one σ per sample, reflect padding (grouped conv, groups = B·C)."""
    batch, channels, height, width = images.shape
    kernels = gaussian_kernels(sigma.to(images.device, images.dtype), size)
    kernels = kernels.repeat_interleave(channels, dim=0)  # (B·C, size)
    pad = size // 2
    x = images.reshape(1, batch * channels, height, width)
    x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="reflect"), kernels.view(-1, 1, 1, size), groups=batch * channels)
    x = F.conv2d(F.pad(x, (0, 0, pad, pad), mode="reflect"), kernels.view(-1, 1, size, 1), groups=batch * channels)
    return x.view(batch, channels, height, width)


def solarize(images: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """x ← 1 − x where x ≥ threshold, else x (images in [0, 1]; BYOL's solarisation, threshold 0.5)."""
    return torch.where(images >= threshold, 1.0 - images, images)


# ---------------------------------------------------------------- the module


class BatchAugment(torch.nn.Module):
    """Random view of every image of a batch: crop+flip, jitter, grayscale, blur, normalise.

    The uniforms come from a CPU generator (the same views on every device, and resumable); on a GPU
    they cross once per batch, without blocking, and every parameter is computed there: no host
    synchronisation inside the step. The normalisation constants are buffers (moved with ``.to``).
    """

    def __init__(self, cfg: AugmentConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("mean", torch.tensor(cfg.mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std, dtype=torch.float32), persistent=False)

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        cfg = self.cfg
        x = to_unit_float(images)
        batch, channels, height, width = x.shape
        u = torch.rand(batch, NUM_DRAWS, generator=generator, dtype=torch.float64)
        if x.device.type == "cuda":
            u = u.pin_memory().to(x.device, non_blocking=True)
        x = crop_and_flip(x, crop_params(u, height, width, cfg), cfg.out_size)

        def chosen(column: int, p: float) -> torch.Tensor:
            return (u[:, column] < p).to(x.device).view(-1, 1, 1, 1)

        if cfg.jitter_p > 0 and any(cfg.jitter):
            order = torch.argsort(u[:, _ORDER], dim=1) if cfg.jitter_order == "random" else None
            active = tuple(strength > 0 for strength in cfg.jitter)
            jittered = color_jitter(x, jitter_factors(u[:, _JITTER], cfg.jitter), order, active)
            x = torch.where(chosen(_JITTER_P, cfg.jitter_p), jittered, x)
        if channels == 3 and cfg.gray_p > 0:
            x = torch.where(chosen(_GRAY, cfg.gray_p), grayscale(x).expand_as(x), x)
        if cfg.blur_p > 0:
            lo, hi = cfg.blur_sigma
            blurred = gaussian_blur(x, lo + (hi - lo) * u[:, _SIGMA], cfg.kernel_size)
            x = torch.where(chosen(_BLUR_P, cfg.blur_p), blurred, x)
        if cfg.solarize_p > 0:
            u_sol = torch.rand(batch, generator=generator, dtype=torch.float64)
            if x.device.type == "cuda":
                u_sol = u_sol.pin_memory().to(x.device, non_blocking=True)
            picked = (u_sol < cfg.solarize_p).to(x.device).view(-1, 1, 1, 1)
            x = torch.where(picked, solarize(x), x)
        return normalize(x, self.mean, self.std)


class ViewPair(torch.nn.Module):
    """The two views of a training step, each with its own ``AugmentConfig`` (asymmetric views as in
    BYOL); view 1 is drawn first, then view 2, from the same generator."""

    def __init__(self, view1: AugmentConfig, view2: AugmentConfig):
        super().__init__()
        self.view1, self.view2 = BatchAugment(view1), BatchAugment(view2)

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.view1(images, generator), self.view2(images, generator)


def eval_transform(images: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Deterministic view for evaluation: float in [0, 1], shorter side resized to ``out_size``
    (bilinear, antialiased; skipped if already that size), centre crop, normalise."""
    x = to_unit_float(images)
    height, width = x.shape[-2:]
    size = cfg.out_size
    if (height, width) != (size, size):
        scale = size / min(height, width)
        new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
        if (new_h, new_w) != (height, width):
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
        top, left = (new_h - size) // 2, (new_w - size) // 2
        x = x[:, :, top:top + size, left:left + size]
    return normalize(x, cfg.mean, cfg.std)

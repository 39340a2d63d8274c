"""Readers for the image datasets of the deep experiments, in the formats they are distributed as.

Every split is a ``torch.utils.data.Dataset`` of ``(uint8 tensor (C, H, W), int label)``.

- STL-10 binary (``stl10_binary/*.bin``): uint8 images stored column-major, labels 1..10 -> 0..9;
  memory-mapped, so the 2.7 GB unlabeled file is not read until a batch is indexed.
- CIFAR-10 / CIFAR-100 python pickles (``cifar-10-batches-py``, ``cifar-100-python``).
- ImageNet class folders (``train/<wnid>/*.JPEG``, ``val/<wnid>/*.JPEG``), decoded with Pillow in
  DataLoader workers: shorter side resized, then a fixed centre crop so batches stack.
- digits: scikit-learn's bundled 8x8 digits (no file needed), a fixed seeded stratified split.

In-memory splits are a :class:`TensorImageDataset` (``.images`` N×C×H×W uint8, ``.labels`` int64 N),
so a trainer indexes whole batches without a DataLoader. Unreadable data raises ``LinsslError``
naming the file.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import shutil
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from linssl.errors import LinsslError

SPLITS = ("pretrain", "train", "test")


@dataclass(frozen=True)
class DatasetSpec:
    """Static facts of a dataset: side of the (square) images the network sees, channels, classes,
    and per-channel mean/std of pixel values in [0, 1] (for normalisation)."""

    name: str
    image_size: int
    channels: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


#: Means/stds: STL-10 and CIFAR from their training images (the widely used published values),
#: ImageNet the standard values, digits computed from all 1797 images after the uint8 conversion
#: below (tests recompute it).
DATASETS: dict[str, DatasetSpec] = {
    "stl10": DatasetSpec("stl10", 96, 3, 10, (0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713)),
    "cifar10": DatasetSpec("cifar10", 32, 3, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": DatasetSpec("cifar100", 32, 3, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": DatasetSpec("imagenet", 224, 3, 1000, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "digits": DatasetSpec("digits", 8, 1, 10, (0.3053,), (0.3759,)),
}

#: ImageNet reader: shorter side resized to this, then centre-cropped to ``IMAGENET_PRETRAIN_CROP``
#: for pretraining (the GPU random resized crop then picks 224 px views) or to 224 for evaluation
#: (the standard 256 -> 224 centre crop).
IMAGENET_RESIZE = 256
IMAGENET_PRETRAIN_CROP = 256
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp")

#: Official archives: url, md5, folder they extract to.
ARCHIVES: dict[str, tuple[str, str, str]] = {
    "stl10": ("http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz", "91f7769df0f17e558f3565bffb0c7dfb",
              "stl10_binary"),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                "cifar-10-batches-py"),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
                 "cifar-100-python"),
}

STL10_SHAPE = (3, 96, 96)
CIFAR_SHAPE = (3, 32, 32)
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


def get_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name``; ``LinsslError`` for an unknown name."""
    try:
        return DATASETS[name]
    except KeyError:
        raise LinsslError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}") from None


def resolve_spec(name: str, data_dir: str | Path | None) -> DatasetSpec:
    """Like :func:`get_spec`, but ImageNet's ``num_classes`` is the number of class folders in ``train/``."""
    spec = get_spec(name)
    if name == "imagenet":
        spec = replace(spec, num_classes=len(_imagenet_classes(_require_dir(name, data_dir))))
    return spec


class TensorImageDataset(torch.utils.data.Dataset):
    """Images held as one uint8 tensor (possibly memory-mapped) with int64 labels (-1 = unlabeled)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.num_classes = num_classes

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


class ImageFolderDataset(torch.utils.data.Dataset):
    """Files ``root/<class>/<image>`` decoded with Pillow: RGB, shorter side resized to ``resize``
    (bilinear, antialiased), centre crop ``crop`` × ``crop``; label = index of the class in ``classes``."""

    def __init__(self, root: Path, classes: list[str], resize: int, crop: int):
        self.root = root
        self.classes = classes
        self.num_classes = len(classes)
        self.resize = resize
        self.crop = crop
        self.samples: list[tuple[Path, int]] = []
        for index, cls in enumerate(classes):
            folder = root / cls
            if folder.is_dir():
                files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
                self.samples.extend((p, index) for p in files)
        if not self.samples:
            raise LinsslError(f"no images found under {root} (expected {root}/<class>/*.JPEG)")
        self.labels = torch.tensor([label for _, label in self.samples], dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return decode_image(path, self.resize, self.crop), label


def loader_batches(loader: torch.utils.data.DataLoader):
    """The batches of ``loader``; a ``LinsslError`` raised in a worker process (a file that does not
    decode) comes back as its own one-line message, not wrapped in the worker's traceback."""
    try:
        yield from loader
    except LinsslError as exc:
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        prefix = f"{LinsslError.__module__}.{LinsslError.__qualname__}: "
        if last.startswith(prefix):
            raise LinsslError(last[len(prefix):]) from None
        raise


def decode_image(path: Path, resize: int, crop: int) -> torch.Tensor:
    """Read an image file as uint8 (3, crop, crop): shorter side -> ``resize``, then centre crop."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    from linssl.io import path_kind

    kind = path_kind(path)
    if kind != "a file":  # a named pipe would block the reader forever
        raise LinsslError(f"cannot decode image {path}: it is {kind or 'missing'}, not a file")
    try:
        with warnings.catch_warnings():
            # an image over Pillow's pixel limit (89 Mpx) is refused, not decoded into gigabytes
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            img = img.convert("RGB")
            w, h = img.size
            scale = resize / min(w, h)
            new_w, new_h = max(crop, round(w * scale)), max(crop, round(h * scale))
            img = img.resize((new_w, new_h), Image.BILINEAR)
            left, top = (new_w - crop) // 2, (new_h - crop) // 2
            img = img.crop((left, top, left + crop, top + crop))
            array = np.asarray(img, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        raise LinsslError(f"cannot decode image {path}: {exc}; delete or replace the file") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def load_split(name: str, data_dir: str | Path | None, split: str) -> torch.utils.data.Dataset:
    """Split ``split`` in {pretrain, train, test} of dataset ``name`` read from ``data_dir``.

    ``pretrain`` is STL-10 train + unlabeled (label -1 for unlabeled) and the train split otherwise.
    """
    spec = get_spec(name)
    if split not in SPLITS:
        raise LinsslError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if name == "digits":
        return _load_digits(split)
    root = _require_dir(name, data_dir)
    if name == "stl10":
        return _load_stl10(root, split)
    if name in ("cifar10", "cifar100"):
        return _load_cifar(root, name, "train" if split == "pretrain" else split, spec.num_classes)
    return _load_imagenet(root, split)


def _require_dir(name: str, data_dir: str | Path | None) -> Path:
    if data_dir is None:
        raise LinsslError(f"dataset {name} needs --data-dir (the folder holding its files)")
    from linssl.io import require_folder

    return require_folder(Path(data_dir).expanduser(), "data dir", f"pass the folder that holds the {name} files")


# ---------------------------------------------------------------- STL-10 binary


def _require_data_file(path: Path, what: str) -> None:
    from linssl.io import path_kind

    kind = path_kind(path)
    if kind is None:
        raise LinsslError(f"missing {what} file {path}; download it with --download or fix --data-dir")
    if kind != "a file":
        raise LinsslError(f"{what} file {path} is {kind}, not a file; fix --data-dir")


def _stl10_images(path: Path) -> torch.Tensor:
    """Memory-map an STL-10 X file: uint8, image-major, each image 3×96×96 column-major -> (N, 3, H, W)."""
    _require_data_file(path, "STL-10")
    per_image = int(np.prod(STL10_SHAPE))
    size = path.stat().st_size
    if size == 0 or size % per_image:
        raise LinsslError(f"STL-10 file {path} has {size} bytes, not a multiple of {per_image} (truncated?)")
    # mode "c" (copy-on-write): a writable array for torch.from_numpy that never modifies the file
    data = np.memmap(path, dtype=np.uint8, mode="c", shape=(size // per_image, *STL10_SHAPE))
    # the file stores each channel column-major (x fastest along columns): swap the last two axes
    return torch.from_numpy(data).transpose(2, 3)


def _stl10_labels(path: Path, count: int, x_path: Path) -> torch.Tensor:
    _require_data_file(path, "STL-10")
    if path.stat().st_size != count:  # checked before reading: a huge file is not read
        raise LinsslError(f"STL-10 file {path} has {path.stat().st_size} labels but {x_path.name} has {count} images")
    labels = np.fromfile(path, dtype=np.uint8)
    if labels.shape[0] != count:
        raise LinsslError(f"STL-10 file {path} has {labels.shape[0]} labels but {x_path.name} has {count} images")
    if count and (labels.min() < 1 or labels.max() > 10):
        raise LinsslError(f"STL-10 file {path} has labels outside 1..10 (corrupt file?)")
    return torch.from_numpy(labels.astype(np.int64) - 1)


def _load_stl10(root: Path, split: str) -> TensorImageDataset:
    folder = root / "stl10_binary"
    if not folder.is_dir():
        raise LinsslError(f"missing folder {folder}; download STL-10 with --download or fix --data-dir")
    part = "test" if split == "test" else "train"
    x_path = folder / f"{part}_X.bin"
    images = _stl10_images(x_path)
    labels = _stl10_labels(folder / f"{part}_y.bin", images.shape[0], x_path)
    if split == "pretrain":
        unlabeled = _stl10_images(folder / "unlabeled_X.bin")
        # one contiguous tensor (train + unlabeled, ~2.9 GB for the full set): batches then index it
        # directly; the single-file splits stay memory-mapped.
        images = torch.cat([images, unlabeled])
        labels = torch.cat([labels, torch.full((unlabeled.shape[0],), -1, dtype=torch.int64)])
    return TensorImageDataset(images, labels, num_classes=10)


# ---------------------------------------------------------------- CIFAR python pickles


#: largest CIFAR pickle read (the official ones: 31 MB per CIFAR-10 batch, 155 MB for CIFAR-100's train)
MAX_CIFAR_FILE_BYTES = 2**30


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays and bytes (the CIFAR files hold nothing else beyond
    builtins), so a foreign pickle cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes at pickle protocol 2
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 3, 32, 32), labels int64 (N,)) from one CIFAR pickle."""
    _require_data_file(path, "CIFAR")
    if path.stat().st_size > MAX_CIFAR_FILE_BYTES:
        raise LinsslError(f"CIFAR file {path} has {path.stat().st_size} bytes; the official files are under 200 MB")
    try:
        with open(path, "rb") as fh:
            batch = _ArrayUnpickler(fh, encoding="bytes").load()
    except Exception as exc:  # any unpickling failure of a truncated or foreign file
        raise LinsslError(f"cannot read CIFAR file {path} ({type(exc).__name__}: {exc}); re-download it") from None
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        raise LinsslError(f"CIFAR file {path} lacks the keys b'data' and {label_key!r}")
    per_image = int(np.prod(CIFAR_SHAPE))
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != per_image:
        raise LinsslError(f"CIFAR file {path}: data is {data.dtype} {data.shape}, expected uint8 (N, {per_image})")
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise LinsslError(f"CIFAR file {path}: {labels.shape} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise LinsslError(f"CIFAR file {path} has labels outside 0..{num_classes - 1}")
    return data.reshape(-1, *CIFAR_SHAPE), labels.astype(np.int64)


def _load_cifar(root: Path, name: str, split: str, num_classes: int) -> TensorImageDataset:
    if name == "cifar10":
        folder, label_key = root / "cifar-10-batches-py", b"labels"
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    else:
        folder, label_key = root / "cifar-100-python", b"fine_labels"
        files = [split]
    if not folder.is_dir():
        raise LinsslError(f"missing folder {folder}; download {name} with --download or fix --data-dir")
    parts = [_read_cifar_batch(folder / f, label_key, num_classes) for f in files]
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return TensorImageDataset(images, labels, num_classes=num_classes)


# ---------------------------------------------------------------- ImageNet class folders


def _imagenet_classes(root: Path) -> list[str]:
    train = root / "train"
    if not train.is_dir():
        raise LinsslError(f"missing folder {train}; ImageNet must be laid out as {root}/train/<wnid>/*.JPEG")
    classes = sorted(p.name for p in train.iterdir() if p.is_dir())
    if not classes:
        raise LinsslError(f"no class folders in {train}; expected {train}/<wnid>/*.JPEG")
    return classes


def _load_imagenet(root: Path, split: str) -> ImageFolderDataset:
    classes = _imagenet_classes(root)  # class indices always come from train/, so val agrees with train
    folder = root / ("val" if split == "test" else "train")
    if not folder.is_dir():
        raise LinsslError(f"missing folder {folder}; ImageNet val must be laid out as {folder}/<wnid>/*.JPEG")
    extra = sorted({p.name for p in folder.iterdir() if p.is_dir()} - set(classes))
    if extra:
        raise LinsslError(f"{folder} has class folders not in train/: {', '.join(extra[:5])}")
    crop = IMAGENET_PRETRAIN_CROP if split == "pretrain" else DATASETS["imagenet"].image_size
    return ImageFolderDataset(folder, classes, resize=IMAGENET_RESIZE, crop=crop)


# ---------------------------------------------------------------- scikit-learn digits


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as uint8 (N, 1, 8, 8) with values round(x · 255 / 16), and int64 labels (fresh
    copies of arrays parsed once per process: scikit-learn re-reads its CSV on every call)."""
    images, labels = _digits_parsed()
    return images.copy(), labels.copy()


@functools.lru_cache(maxsize=1)
def _digits_parsed() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return images, digits.target.astype(np.int64)


def digits_split_indices() -> tuple[np.ndarray, np.ndarray]:
    """Fixed stratified split of the digits: (train indices, test indices), 80/20, seed 0."""
    from sklearn.model_selection import train_test_split

    _, labels = digits_arrays()
    index = np.arange(labels.shape[0])
    train, test = train_test_split(index, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED,
                                   stratify=labels)
    return np.sort(train), np.sort(test)


def _load_digits(split: str) -> TensorImageDataset:
    images, labels = digits_arrays()
    train, test = digits_split_indices()
    index = test if split == "test" else train
    return TensorImageDataset(torch.from_numpy(images[index]), torch.from_numpy(labels[index]), num_classes=10)


# ---------------------------------------------------------------- download


def download(name: str, data_dir: str | Path) -> None:
    """Fetch and extract the official archive of ``name`` into ``data_dir`` (skipped if already there)."""
    get_spec(name)
    if name == "digits":
        raise LinsslError("digits ships with scikit-learn and needs no download; drop --download")
    if name == "imagenet":
        raise LinsslError("ImageNet cannot be downloaded automatically (registration required); "
                          "place it as DIR/train/<wnid>/*.JPEG and DIR/val/<wnid>/*.JPEG")
    url, md5, folder = ARCHIVES[name]
    root = Path(data_dir).expanduser()
    if (root / folder).is_dir() and any((root / folder).iterdir()):
        return
    root.mkdir(parents=True, exist_ok=True)
    archive = root / url.rsplit("/", 1)[1]
    if not archive.is_file() or _md5(archive) != md5:
        partial = archive.with_name(archive.name + ".part")
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
        except (urllib.error.URLError, OSError) as exc:
            partial.unlink(missing_ok=True)
            raise LinsslError(f"cannot download {url} ({exc}); fetch it by hand into {root} and extract it") from None
        os.replace(partial, archive)
        if _md5(archive) != md5:
            raise LinsslError(f"{archive} has the wrong checksum (expected md5 {md5}); delete it and retry")
    # extracted beside the target, then renamed into place: an interrupted extraction never leaves a
    # partial folder that the "already there" test above would take for the dataset
    staging = root / f".{folder}.extracting"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            _check_members(tar, staging)
            tar.extractall(staging)
        if not (staging / folder).is_dir():
            raise LinsslError(f"{archive} does not hold the folder {folder}/; delete it and retry")
        if (root / folder).is_dir():
            (root / folder).rmdir()  # empty (a non-empty one returned above)
        os.replace(staging / folder, root / folder)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise LinsslError(f"cannot extract {archive} ({exc}); delete it and retry") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_members(tar: tarfile.TarFile, root: Path) -> None:
    """Refuse archives with links or paths that would land outside ``root``."""
    base = root.resolve()
    for member in tar.getmembers():
        target = (root / member.name).resolve()
        if not (member.isfile() or member.isdir()) or not target.is_relative_to(base):
            raise LinsslError(f"refusing to extract {member.name!r}: not a plain file inside {root}")


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()

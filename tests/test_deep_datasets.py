"""Dataset readers against tiny files written in the official formats.

The ``write_fake_*`` helpers below write files exactly as the datasets are distributed (STL-10
column-major binaries, CIFAR python pickles, ImageNet class folders) and return the ground truth
``{split: (uint8 images (N, C, H, W), int64 labels)}`` so other tests can build tiny data dirs too.
"""

from __future__ import annotations

import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from linssl.deep import datasets
from linssl.deep.datasets import DATASETS, TensorImageDataset, get_spec, load_split, resolve_spec
from linssl.errors import LinsslError

Arrays = dict[str, tuple[np.ndarray, np.ndarray]]


def _random_images(rng: np.random.Generator, n: int, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def write_fake_stl10(data_dir: Path, n_train: int, n_test: int, n_unlabeled: int = 0, seed: int = 0) -> Arrays:
    """STL-10 binary: DIR/stl10_binary/{train,test}_{X,y}.bin, unlabeled_X.bin; X column-major, y 1..10."""
    rng = np.random.default_rng(seed)
    folder = Path(data_dir) / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    truth: Arrays = {}
    for part, n in (("train", n_train), ("test", n_test), ("unlabeled", n_unlabeled)):
        images = _random_images(rng, n, (3, 96, 96))
        # column-major per channel: the file walks down the rows of column 0 first
        (folder / f"{part}_X.bin").write_bytes(np.ascontiguousarray(images.transpose(0, 1, 3, 2)).tobytes())
        labels = rng.integers(0, 10, size=n).astype(np.int64) if part != "unlabeled" else -np.ones(n, np.int64)
        if part != "unlabeled":
            (folder / f"{part}_y.bin").write_bytes((labels + 1).astype(np.uint8).tobytes())
        truth[part] = (images, labels)
    if n_unlabeled == 0:
        (folder / "unlabeled_X.bin").unlink()
    truth["pretrain"] = tuple(np.concatenate([truth["train"][i], truth["unlabeled"][i]]) for i in range(2))
    return truth


def write_fake_cifar(name: str, data_dir: Path, n_train: int, n_test: int, seed: int = 0) -> Arrays:
    """CIFAR python format: pickled dicts (protocol 2, bytes keys) with b'data' N×3072 uint8 channel-major."""
    rng = np.random.default_rng(seed)
    num_classes = 10 if name == "cifar10" else 100
    if name == "cifar10":
        folder = Path(data_dir) / "cifar-10-batches-py"
        files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    else:
        folder = Path(data_dir) / "cifar-100-python"
        files = {"train": ["train"], "test": ["test"]}
    folder.mkdir(parents=True, exist_ok=True)
    truth: Arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = _random_images(rng, n, (3, 32, 32))
        labels = rng.integers(0, num_classes, size=n).astype(np.int64)
        for fname, idx in zip(files[split], np.array_split(np.arange(n), len(files[split])), strict=True):
            batch = {b"batch_label": fname.encode(), b"data": images[idx].reshape(len(idx), 3072),
                     b"filenames": [f"img_{i}.png".encode() for i in idx]}
            if name == "cifar10":
                batch[b"labels"] = [int(v) for v in labels[idx]]
            else:
                batch[b"fine_labels"] = [int(v) for v in labels[idx]]
                batch[b"coarse_labels"] = [int(v) // 5 for v in labels[idx]]
            (folder / fname).write_bytes(pickle.dumps(batch, protocol=2))
        truth[split] = (images, labels)
    truth["pretrain"] = truth["train"]
    return truth


def write_fake_imagenet(data_dir: Path, n_train: int, n_test: int, num_classes: int = 2, size: int = 256,
                        seed: int = 0, ext: str = ".png") -> Arrays:
    """ImageNet class folders DIR/{train,val}/<wnid>/*; PNG by default so pixels round-trip exactly.

    Images are ``size``×``size``; at size 256 the reader's resize is the identity, so the pretrain split
    returns the images as written and train/test the central 224×224 crop.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    classes = [f"n{index:08d}" for index in range(num_classes)]
    truth: Arrays = {}
    for split, folder_name, n in (("train", "train", n_train), ("test", "val", n_test)):
        labels = np.sort(np.arange(n) % num_classes).astype(np.int64)
        images = _random_images(rng, n, (size, size, 3))
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            folder = Path(data_dir) / folder_name / classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{classes[label]}_{i:05d}{ext}")
        truth[split] = (images.transpose(0, 3, 1, 2), labels)
    truth["pretrain"] = truth["train"]
    return truth


def write_fake(name: str, data_dir: Path, n_train: int, n_test: int, n_unlabeled: int = 0, seed: int = 0) -> Arrays:
    """Write a tiny copy of dataset ``name`` in its official format (digits needs no files)."""
    if name == "stl10":
        return write_fake_stl10(data_dir, n_train, n_test, n_unlabeled, seed)
    if name in ("cifar10", "cifar100"):
        return write_fake_cifar(name, data_dir, n_train, n_test, seed)
    if name == "imagenet":
        return write_fake_imagenet(data_dir, n_train, n_test, seed=seed)
    raise ValueError(f"no fake writer for {name}")


def _as_arrays(ds) -> tuple[np.ndarray, np.ndarray]:
    images = torch.stack([ds[i][0] for i in range(len(ds))]).numpy()
    labels = np.array([ds[i][1] for i in range(len(ds))])
    return images, labels


# ---------------------------------------------------------------- specs


def test_specs_and_unknown_name():
    assert {k: (s.image_size, s.channels, s.num_classes) for k, s in DATASETS.items()} == {
        "stl10": (96, 3, 10), "cifar10": (32, 3, 10), "cifar100": (32, 3, 100),
        "imagenet": (224, 3, 1000), "digits": (8, 1, 10)}
    for spec in DATASETS.values():
        assert len(spec.mean) == len(spec.std) == spec.channels
    with pytest.raises(LinsslError, match="unknown dataset 'mnist'"):
        get_spec("mnist")
    with pytest.raises(LinsslError, match="unknown split"):
        load_split("digits", None, "val")


def test_missing_data_dir(tmp_path):
    with pytest.raises(LinsslError, match="--data-dir"):
        load_split("cifar10", None, "train")
    with pytest.raises(LinsslError, match="does-not-exist"):
        load_split("stl10", tmp_path / "does-not-exist", "train")
    with pytest.raises(LinsslError, match="stl10_binary"):
        load_split("stl10", tmp_path, "train")
    with pytest.raises(LinsslError, match="cifar-100-python"):
        load_split("cifar100", tmp_path, "test")


# ---------------------------------------------------------------- STL-10


def test_stl10_round_trip(tmp_path):
    truth = write_fake_stl10(tmp_path, n_train=6, n_test=4, n_unlabeled=5, seed=1)
    for split in ("train", "test", "pretrain"):
        ds = load_split("stl10", tmp_path, split)
        assert isinstance(ds, TensorImageDataset)
        assert ds.images.dtype == torch.uint8 and ds.labels.dtype == torch.int64
        np.testing.assert_array_equal(ds.images.numpy(), truth[split][0])
        np.testing.assert_array_equal(ds.labels.numpy(), truth[split][1])
        image, label = ds[len(ds) - 1]
        assert image.shape == (3, 96, 96) and isinstance(label, int)
    assert load_split("stl10", tmp_path, "pretrain").labels[-5:].tolist() == [-1] * 5


def test_stl10_column_major_orientation(tmp_path):
    """Independent of the writer: the first 96 bytes of the file are column 0 of channel 0, top to bottom."""
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    raw = np.zeros(3 * 96 * 96, np.uint8)
    raw[:96] = np.arange(96)            # channel 0, column 0, rows 0..95
    raw[96:192] = 200                   # channel 0, column 1
    raw[2 * 96 * 96 + 5] = 77           # channel 2, column 0, row 5
    (folder / "train_X.bin").write_bytes(raw.tobytes())
    (folder / "train_y.bin").write_bytes(bytes([3]))
    ds = load_split("stl10", tmp_path, "train")
    image, label = ds[0]
    assert label == 2
    assert image[0, :, 0].tolist() == list(range(96))
    assert image[0, :, 1].tolist() == [200] * 96
    assert image[0, 0, 2:].sum() == 0
    assert image[2, 5, 0] == 77 and image[2, 0, 5] == 0


def test_stl10_bad_files(tmp_path):
    write_fake_stl10(tmp_path, n_train=3, n_test=2, seed=2)
    x_path = tmp_path / "stl10_binary" / "train_X.bin"
    y_path = tmp_path / "stl10_binary" / "train_y.bin"
    with pytest.raises(LinsslError, match="unlabeled_X.bin"):
        load_split("stl10", tmp_path, "pretrain")
    y_path.write_bytes(bytes([1, 2]))  # 2 labels for 3 images
    with pytest.raises(LinsslError, match="train_y.bin"):
        load_split("stl10", tmp_path, "train")
    y_path.write_bytes(bytes([1, 11, 2]))  # label 11 does not exist
    with pytest.raises(LinsslError, match="train_y.bin"):
        load_split("stl10", tmp_path, "train")
    x_path.write_bytes(x_path.read_bytes()[:-10])  # truncated
    with pytest.raises(LinsslError, match="train_X.bin.*multiple"):
        load_split("stl10", tmp_path, "train")
    (tmp_path / "stl10_binary" / "test_y.bin").unlink()
    with pytest.raises(LinsslError, match="test_y.bin"):
        load_split("stl10", tmp_path, "test")


# ---------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_round_trip(tmp_path, name):
    truth = write_fake_cifar(name, tmp_path, n_train=12, n_test=3, seed=3)
    for split in ("train", "test", "pretrain"):
        ds = load_split(name, tmp_path, split)
        assert isinstance(ds, TensorImageDataset)
        np.testing.assert_array_equal(ds.images.numpy(), truth[split][0])
        np.testing.assert_array_equal(ds.labels.numpy(), truth[split][1])
    # channel-major rows: the first 1024 values of a row are the red plane
    image, _ = load_split(name, tmp_path, "test")[0]
    np.testing.assert_array_equal(image[0].reshape(-1).numpy(), truth["test"][0][0].reshape(3072)[:1024])


def test_cifar_old_numpy_module_path(tmp_path):
    """The official files were written by numpy 1 (module numpy.core.multiarray): still readable."""
    write_fake_cifar("cifar100", tmp_path, n_train=4, n_test=2, seed=4)
    path = tmp_path / "cifar-100-python" / "test"
    path.write_bytes(path.read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert load_split("cifar100", tmp_path, "test").images.shape == (2, 3, 32, 32)


def test_cifar_bad_files(tmp_path):
    write_fake_cifar("cifar10", tmp_path, n_train=10, n_test=2, seed=5)
    folder = tmp_path / "cifar-10-batches-py"
    good = (folder / "test_batch").read_bytes()
    for broken in (good[: len(good) // 2], b"not a pickle at all", b""):
        (folder / "test_batch").write_bytes(broken)
        with pytest.raises(LinsslError, match="test_batch"):
            load_split("cifar10", tmp_path, "test")
    # wrong shape: 3000 values per image
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(LinsslError, match="test_batch.*3072"):
        load_split("cifar10", tmp_path, "test")
    # label count disagrees with image count
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}))
    with pytest.raises(LinsslError, match="test_batch"):
        load_split("cifar10", tmp_path, "test")
    # a pickle that would run code is refused, not executed
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(LinsslError, match="test_batch"):
        load_split("cifar10", tmp_path, "test")
    assert not marker.exists()
    (folder / "data_batch_3").unlink()
    with pytest.raises(LinsslError, match="data_batch_3"):
        load_split("cifar10", tmp_path, "train")


# ---------------------------------------------------------------- ImageNet


def test_imagenet_round_trip(tmp_path):
    truth = write_fake_imagenet(tmp_path, n_train=3, n_test=2, num_classes=2, seed=6)
    pretrain = load_split("imagenet", tmp_path, "pretrain")
    images, labels = _as_arrays(pretrain)
    np.testing.assert_array_equal(images, truth["train"][0])  # 256 px: resize is the identity, crop 256
    np.testing.assert_array_equal(labels, truth["train"][1])
    test = load_split("imagenet", tmp_path, "test")
    images, labels = _as_arrays(test)
    assert images.shape == (2, 3, 224, 224)
    np.testing.assert_array_equal(images, truth["test"][0][:, :, 16:240, 16:240])  # centre 224 of 256
    np.testing.assert_array_equal(labels, truth["test"][1])
    assert resolve_spec("imagenet", tmp_path).num_classes == 2
    assert pretrain.num_classes == 2


def test_imagenet_resizes_jpeg_and_loader_stacks(tmp_path):
    from PIL import Image

    for cls, (w, h) in (("a", (300, 200)), ("b", (120, 500))):
        (tmp_path / "train" / cls).mkdir(parents=True)
        Image.new("RGB", (w, h), (10, 20, 30)).save(tmp_path / "train" / cls / "x.JPEG", quality=95)
    ds = load_split("imagenet", tmp_path, "train")
    loader = torch.utils.data.DataLoader(ds, batch_size=2)
    images, labels = next(iter(loader))
    assert images.shape == (2, 3, 224, 224) and images.dtype == torch.uint8
    assert labels.tolist() == [0, 1]
    # a flat colour survives resize + JPEG within a few grey levels
    assert (images[:, 0].float() - 10).abs().max() <= 3


def test_imagenet_bad_input(tmp_path):
    with pytest.raises(LinsslError, match="train"):
        load_split("imagenet", tmp_path, "train")
    (tmp_path / "train" / "n01").mkdir(parents=True)
    with pytest.raises(LinsslError, match="no images"):
        load_split("imagenet", tmp_path, "train")
    with pytest.raises(LinsslError, match="val"):
        load_split("imagenet", tmp_path, "test")
    bad = tmp_path / "train" / "n01" / "broken.JPEG"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    ds = load_split("imagenet", tmp_path, "train")
    with pytest.raises(LinsslError, match="broken.JPEG"):
        ds[0]
    (tmp_path / "val" / "n99").mkdir(parents=True)
    with pytest.raises(LinsslError, match="n99"):
        load_split("imagenet", tmp_path, "test")


def test_an_undecodable_file_in_a_worker_process_is_one_line(tmp_path):
    """DataLoader workers wrap a worker's exception in its traceback; loader_batches gives back the line."""
    write_fake_imagenet(tmp_path, n_train=2, n_test=1, num_classes=1, size=40)
    (tmp_path / "train" / "n00000000" / "zz_broken.JPEG").write_bytes(b"not a jpeg")
    ds = load_split("imagenet", tmp_path, "train")
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=1)
    with pytest.raises(LinsslError) as info:
        list(datasets.loader_batches(loader))
    message = str(info.value)
    assert "\n" not in message and message.startswith("cannot decode image") and "zz_broken.JPEG" in message


# ---------------------------------------------------------------- digits


def test_digits_split_is_fixed_stratified_and_exact():
    from sklearn.datasets import load_digits

    train = load_split("digits", None, "train")
    test = load_split("digits", "/nonexistent/is/ignored", "test")
    assert train.images.shape == (1437, 1, 8, 8) and test.images.shape == (360, 1, 8, 8)
    assert train.images.dtype == torch.uint8
    train_idx, test_idx = datasets.digits_split_indices()
    assert set(train_idx).isdisjoint(test_idx) and len(train_idx) + len(test_idx) == 1797
    again = load_split("digits", None, "train")
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)
    assert torch.equal(load_split("digits", None, "pretrain").images, train.images)
    # stratified: each class has 20% ± 1 image of its members in test
    raw = load_digits()
    counts = np.bincount(raw.target, minlength=10)
    assert np.all(np.abs(np.bincount(test.labels.numpy(), minlength=10) - 0.2 * counts) <= 1)
    # pixel values: round(x * 255 / 16) of the sklearn images, at the right indices
    expected = np.round(raw.images[test_idx] * 255 / 16)
    np.testing.assert_array_equal(test.images[:, 0].numpy(), expected)
    np.testing.assert_array_equal(test.labels.numpy(), raw.target[test_idx])


def test_digits_mean_std_match_the_data():
    images, _ = datasets.digits_arrays()
    pixels = images / 255.0
    spec = get_spec("digits")
    # the DatasetSpec stores 4 decimals: rounding error at most 5e-5
    assert abs(pixels.mean() - spec.mean[0]) < 5e-5
    assert abs(pixels.std() - spec.std[0]) < 5e-5


# ---------------------------------------------------------------- download


def test_download_refusals_and_network_failure(tmp_path, monkeypatch):
    with pytest.raises(LinsslError, match="scikit-learn"):
        datasets.download("digits", tmp_path)
    with pytest.raises(LinsslError, match="ImageNet"):
        datasets.download("imagenet", tmp_path)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(datasets.urllib.request, "urlopen", offline)
    with pytest.raises(LinsslError, match="cannot download .*cifar-10-python.tar.gz"):
        datasets.download("cifar10", tmp_path / "data")
    assert not list((tmp_path / "data").glob("*.part"))
    # already extracted: nothing is fetched
    write_fake_stl10(tmp_path / "data", n_train=1, n_test=1)
    datasets.download("stl10", tmp_path / "data")


def test_download_extracts_a_verified_archive(tmp_path, monkeypatch):
    """A local archive with the expected checksum is extracted without any network access."""
    import hashlib
    import io
    import tarfile

    src = tmp_path / "src"
    write_fake_cifar("cifar100", src, n_train=2, n_test=1)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(src / "cifar-100-python", arcname="cifar-100-python")
    data = tmp_path / "data"
    data.mkdir()
    (data / "cifar-100-python.tar.gz").write_bytes(buffer.getvalue())
    url, _, folder = datasets.ARCHIVES["cifar100"]
    monkeypatch.setitem(datasets.ARCHIVES, "cifar100", (url, hashlib.md5(buffer.getvalue()).hexdigest(), folder))
    monkeypatch.setattr(datasets.urllib.request, "urlopen", None)  # any network use would fail

    real_extractall = tarfile.TarFile.extractall

    def interrupted(self, path, *args, **kwargs):  # part of the archive lands, then Ctrl-C
        real_extractall(self, path, members=self.getmembers()[:2])
        raise KeyboardInterrupt

    monkeypatch.setattr(tarfile.TarFile, "extractall", interrupted)
    with pytest.raises(KeyboardInterrupt):
        datasets.download("cifar100", data)
    assert sorted(p.name for p in data.iterdir()) == ["cifar-100-python.tar.gz"]  # no partial dataset folder
    monkeypatch.setattr(tarfile.TarFile, "extractall", real_extractall)
    datasets.download("cifar100", data)  # so a second --download repairs it
    assert load_split("cifar100", data, "train").images.shape == (2, 3, 32, 32)
    assert sorted(p.name for p in data.iterdir()) == ["cifar-100-python", "cifar-100-python.tar.gz"]

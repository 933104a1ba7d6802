"""Datasets and DataLoader: the embedded mnist-5k, IDX parsing (good and malformed), downloads."""

import gzip
import hashlib
import http.server
import threading
from functools import partial

import numpy as np
import pytest

from tinydl.data import DataLoader, DatasetError, load_dataset, mnist_5k, read_idx
from tinydl.data.datasets import IDX_SOURCES, IdxSource, idx_dataset


def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + np.array(arr.shape, dtype=">u4").tobytes()
    return header + arr.tobytes()


def write_idx_set(folder, n_train=12, n_test=5, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    md5 = {}
    for name, arr in data.items():
        raw = idx_bytes(arr)
        if gz:
            raw = gzip.compress(raw)
            name += ".gz"
        (folder / name).write_bytes(raw)
        md5[name if gz else name + ".gz"] = hashlib.md5(raw).hexdigest()
    return data, md5


def test_mnist_5k_split():
    train, test = mnist_5k()
    assert len(train) == 4000 and len(test) == 1000
    assert train.images.shape == (4000, 1, 28, 28) and train.images.dtype == np.uint8
    assert np.bincount(test.labels).tolist() == [100] * 10
    assert np.bincount(train.labels).tolist() == [400] * 10
    # deterministic: the same split every time
    train2, test2 = mnist_5k()
    assert np.array_equal(test.labels, test2.labels) and np.array_equal(train.images[:50], train2.images[:50])
    # real digits: strokes are bright on a dark background
    assert train.images.mean() < 60 and train.images.max() == 255


@pytest.mark.parametrize("gz", [True, False])
def test_idx_roundtrip(tmp_path, gz):
    data, _ = write_idx_set(tmp_path / "mnist", gz=gz)
    train, test = idx_dataset("mnist", tmp_path)
    assert np.array_equal(train.images[:, 0], data["train-images-idx3-ubyte"])
    assert np.array_equal(test.labels, data["t10k-labels-idx1-ubyte"])
    assert train.labels.dtype == np.int64 and len(test) == 5


def test_read_idx_other_dtypes(tmp_path):
    arr = np.arange(6, dtype=">i4").reshape(2, 3)
    (tmp_path / "x").write_bytes(bytes([0, 0, 0x0C, 2]) + np.array([2, 3], ">u4").tobytes() + arr.tobytes())
    assert read_idx(tmp_path / "x").tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize("mutate,message", [
    (lambda b: b"\x01\x02" + b[2:], "bad magic"),
    (lambda b: b[:2] + b"\x42" + b[3:], "bad magic"),
    (lambda b: b[:-7], "truncated"),
    (lambda b: b + b"xx", "trailing bytes"),
    (lambda b: b[:6], "header is truncated"),
    (lambda b: b"", "bad magic"),
])
def test_malformed_idx(tmp_path, mutate, message):
    good = idx_bytes(np.zeros((3, 4, 4)))
    (tmp_path / "bad").write_bytes(mutate(good))
    with pytest.raises(DatasetError, match=message) as e:
        read_idx(tmp_path / "bad")
    assert str(tmp_path / "bad") in str(e.value)


def test_corrupt_gzip(tmp_path):
    (tmp_path / "f.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((2, 2))))[:-10])
    with pytest.raises(DatasetError, match="cannot read"):
        read_idx(tmp_path / "f.gz")


def test_label_image_count_mismatch(tmp_path):
    write_idx_set(tmp_path / "mnist")
    (tmp_path / "mnist" / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(11))))
    with pytest.raises(DatasetError, match="12 images but 11 labels"):
        idx_dataset("mnist", tmp_path)


def test_missing_files_message_lists_files_and_places(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_dataset("fashion-mnist", tmp_path)
    msg = str(e.value)
    assert "train-images-idx3-ubyte.gz" in msg and "t10k-labels-idx1-ubyte.gz" in msg
    assert str(tmp_path / "fashion-mnist") in msg and "--download" in msg


def test_unknown_dataset():
    with pytest.raises(DatasetError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")


@pytest.fixture
def http_server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield served, f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()
    srv.server_close()


def test_download_checksum_and_fallback_mirror(tmp_path, http_server):
    served, url = http_server
    data, md5 = write_idx_set(served)
    # the first mirror does not exist: the loader must fall back to the second
    source = IdxSource("mnist", (url + "missing/", url), md5)
    train, test = idx_dataset("mnist", tmp_path / "cache", download_missing=True, source=source)
    assert np.array_equal(train.labels, data["train-labels-idx1-ubyte"])
    assert sorted(p.name for p in (tmp_path / "cache" / "mnist").iterdir()) == sorted(md5)  # no temp files left


def test_download_rejects_bad_checksum(tmp_path, http_server):
    served, url = http_server
    _, md5 = write_idx_set(served)
    md5["train-images-idx3-ubyte.gz"] = "0" * 32
    source = IdxSource("mnist", (url,), md5)
    with pytest.raises(DatasetError, match="checksum mismatch"):
        idx_dataset("mnist", tmp_path / "cache", download_missing=True, source=source)
    assert not (tmp_path / "cache" / "mnist" / "train-images-idx3-ubyte.gz").exists()


def test_known_sources_are_complete():
    for src in IDX_SOURCES.values():
        assert len(src.files) == 4 and all(len(m) == 32 for m in src.files.values()) and src.mirrors


def test_dataloader_batches_and_seeded_shuffle(tmp_path):
    write_idx_set(tmp_path / "mnist", n_train=10)
    train, _ = idx_dataset("mnist", tmp_path)
    dl = DataLoader(train, batch_size=4, shuffle=True, seed=3)
    batches = list(dl)
    assert [len(y) for _, y in batches] == [4, 4, 2] and len(dl) == 3
    x, y = batches[0]
    assert x.shape == (4, 1, 28, 28) and str(x.dtype) == "torch.float32" and str(y.dtype) == "torch.int64"
    again = [y.data.tolist() for _, y in DataLoader(train, 4, shuffle=True, seed=3)]
    assert again == [y.data.tolist() for _, y in batches]  # same seed, same order
    dl.set_epoch(1)
    assert [y.data.tolist() for _, y in dl] != again  # a new epoch reshuffles
    # resume mid-epoch: skipping the first batch gives the rest of the same order
    dl.set_epoch(1, skip=1)
    rest = [y.data.tolist() for _, y in dl]
    dl.set_epoch(1)
    assert rest == [y.data.tolist() for _, y in dl][1:]
    assert len(DataLoader(train, 4, drop_last=True)) == 2
    # normalisation: (x/255 - mean)/std
    plain = next(iter(DataLoader(train, 10)))[0].data.numpy()
    ref = (train.images / 255.0 - 0.1307) / 0.3081
    np.testing.assert_allclose(plain, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_dataloader_bad_batch_size(bad):
    train, _ = mnist_5k()
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        DataLoader(train, bad)

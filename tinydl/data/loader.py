"""DataLoader: batches of normalised float32 images and int64 labels as tinydl Tensors."""

from __future__ import annotations

import math

import numpy as np
import torch

from tinydl import _runtime
from tinydl.autograd import Tensor

from .datasets import ArrayDataset


class DataLoader:
    """Iterate ``(images, labels)`` batches of an ArrayDataset.

    Shuffling is seeded: the order of epoch ``e`` is a permutation drawn from ``(seed, e)``, so a
    resumed run (``set_epoch(e)``, ``skip`` batches already seen) sees exactly the same batches.
    Normalisation happens once, on the host, when the loader is built.
    """

    def __init__(self, dataset: ArrayDataset, batch_size: int = 1, shuffle: bool = False, drop_last: bool = False,
                 seed: int = 0, device: str | None = None):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.dataset = dataset
        self.batch_size, self.shuffle, self.drop_last, self.seed = batch_size, shuffle, drop_last, seed
        self.device = device or _runtime.device()
        self.epoch = 0
        self.skip = 0
        self._x = torch.from_numpy(dataset.normalize(dataset.images))
        self._y = torch.from_numpy(dataset.labels.astype(np.int64))

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Choose the epoch's shuffle order, and how many of its first batches to skip (resume)."""
        self.epoch, self.skip = epoch, skip

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def order(self) -> np.ndarray:
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, self.epoch]).permutation(n)

    def __iter__(self):
        idx = self.order()
        for b in range(self.skip, len(self)):
            sel = torch.from_numpy(idx[b * self.batch_size:(b + 1) * self.batch_size])
            x = self._x.index_select(0, sel).to(self.device, non_blocking=True)
            y = self._y.index_select(0, sel).to(self.device, non_blocking=True)
            yield Tensor(x), Tensor(y)
        self.skip = 0

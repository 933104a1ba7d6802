"""tinydl.data: datasets and the DataLoader."""

from .datasets import DATASETS, ArrayDataset, DatasetError, load_dataset, mnist_5k, read_idx
from .loader import DataLoader

__all__ = ["DATASETS", "ArrayDataset", "DatasetError", "DataLoader", "load_dataset", "mnist_5k", "read_idx"]

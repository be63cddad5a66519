"""Datasets read from disk, held in memory as uint8 image tensors.

Every loader returns an :class:`ImageData` (images ``(N, C, H, W)`` uint8, labels ``(N,)`` int64 or None).
Nothing is downloaded: MNIST-5k ships with essl; CIFAR and image folders are read from paths you give.
"""

from essl.data.datasets import DATASETS, load_dataset
from essl.data.types import ImageData
from essl.data.cifar import load_cifar
from essl.data.image_folder import load_image_folder
from essl.data.mnist5k import load_mnist5k
from essl.data.npy import as_image_data, load_npy

__all__ = [
    "DATASETS",
    "ImageData",
    "load_dataset",
    "load_cifar",
    "load_image_folder",
    "load_mnist5k",
    "load_npy",
    "as_image_data",
]

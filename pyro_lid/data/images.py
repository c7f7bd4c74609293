"""MNIST and Fashion-MNIST from local files (offline first), as flat intensities in [0, 1].

Where a data set is looked for, in order: the ``root`` you pass (flat IDX files, or
torchvision's ``<root>/<Name>/raw`` layout), then system-wide copies (the Debian package
``dataset-fashion-mnist`` installs Fashion-MNIST under ``/usr/share/datasets/fashion-mnist``).
Only with ``download=True`` does torchvision fetch it from the network.
"""

from __future__ import annotations

import gzip
import math
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch

__all__ = ["read_idx", "load_images", "image_file", "binarize", "pixel_fisher_weights", "DATASETS"]

DATASETS = {
    "mnist": {
        "torchvision": "MNIST",
        "system": ["/usr/share/datasets/mnist"],
        "install": "pass root=<a folder holding those files> (--root on the command line)",
    },
    "fashion-mnist": {
        "torchvision": "FashionMNIST",
        "system": ["/usr/share/datasets/fashion-mnist"],
        "install": "install `apt-get install dataset-fashion-mnist`, or pass root=<a folder holding those files>",
    },
}
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | Path) -> torch.Tensor:
    """Read an IDX file (optionally gzipped) into a uint8 tensor of its stored shape.

    :raises ValueError: naming the file, for one that cannot be read or is not a whole unsigned-byte IDX file
        (a damaged or truncated gzip stream, a short header, fewer or more values than the header's shape).
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise
    except gzip.BadGzipFile as error:  # before OSError, its base class
        raise ValueError(f"{path} is not a valid gzip file ({error}): damaged, or not compressed despite its "
                         ".gz name") from None  # fmt: skip
    except EOFError:
        raise ValueError(f"{path} is truncated: its gzip stream ends early; replace it with a whole copy") from None
    except zlib.error as error:
        raise ValueError(f"{path} has damaged compressed data ({error}); replace it with a whole copy") from None
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror or error}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated header: {ndim} dimensions need {4 + 4 * ndim} header bytes, the file "
                         f"has {len(raw)}")  # fmt: skip
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != math.prod(shape):
        raise ValueError(f"{path}: header says shape {shape} but holds {data.size} values (truncated file?)")
    return torch.from_numpy(data.reshape(shape).copy())


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def load_images(name: str, split: str = "train", root: str | Path | None = None, download: bool = False):
    """Return ``(images, labels)``: ``(N, 784)`` float intensities in [0, 1] and ``(N,)`` integer labels.

    :param name: ``"mnist"`` or ``"fashion-mnist"``.
    :param split: ``"train"`` or ``"test"``.
    :param root: a folder with the IDX files (flat, or torchvision's layout).
    :param download: let torchvision download into ``root`` if nothing is found (needs the network).
    :raises FileNotFoundError: naming the places searched and what to install or pass, or a ``root``
        that does not exist. A ``root`` without the files falls back to the system-wide copy, with a warning.
    :raises ValueError: for a label file that does not match its image file (shape or count).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose from {sorted(DATASETS)}")
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    spec = DATASETS[name]
    candidates, found = _search(name, split, root)
    image_stem, label_stem = _FILES[split]
    if found is not None:
        images, labels = found
        if root is not None and not images.is_relative_to(Path(root)):
            warnings.warn(f"no {name} files in {root}; using the copy in {images.parent}", stacklevel=2)
        return _images_and_labels(images, labels)
    if download:
        if root is None:
            raise ValueError("download=True needs a root folder to download into")
        import torchvision

        ds = getattr(torchvision.datasets, spec["torchvision"])(str(root), train=split == "train", download=True)
        return ds.data.reshape(len(ds.data), -1).float() / 255.0, ds.targets.long()
    searched = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"{name} ({split}) not found: looked for {image_stem}[.gz] and {label_stem}[.gz] in {searched}. "
        f"To fix: {spec['install']} (or use download=True with network access)."
    )


def _search(name: str, split: str, root) -> tuple[list[Path], tuple[Path, Path] | None]:
    """The folders :func:`load_images` looks in, in order, and the image and label files of the first that has
    both (``None`` where none has)."""
    spec = DATASETS[name]
    candidates = []
    if root is not None:
        if not Path(root).is_dir():
            raise FileNotFoundError(f"root {root} does not exist or is not a directory (it should hold {name}'s files)")
        candidates += [Path(root), Path(root) / spec["torchvision"] / "raw"]
    candidates += [Path(p) for p in spec["system"]]
    image_stem, label_stem = _FILES[split]
    for folder in candidates:
        images, labels = _find(folder, image_stem), _find(folder, label_stem)
        if images and labels:
            return candidates, (images, labels)
    return candidates, None


def image_file(name: str, split: str = "train", root: str | Path | None = None) -> Path | None:
    """The image file :func:`load_images` reads for ``name``'s ``split`` (``None`` where it finds none)."""
    found = _search(name, split, root)[1]
    return None if found is None else found[0]


def _images_and_labels(image_path: Path, label_path: Path):
    """Read an image file and its label file, refusing a pair that does not belong together."""
    x, y = read_idx(image_path), read_idx(label_path)
    if x.dim() != 3:
        raise ValueError(f"{image_path} is not an image file: it holds an array of shape {tuple(x.shape)}, not NxHxW")
    if y.dim() != 1:
        raise ValueError(f"{label_path} is not a label file: it holds an array of shape {tuple(y.shape)} (expected N)")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{label_path} holds {y.shape[0]} labels but {image_path} holds {x.shape[0]} images")
    return x.reshape(x.shape[0], -1).float() / 255.0, y.long()


def binarize(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A fixed stochastic binarization ``x ~ Bernoulli(intensity)``, reproducible through ``seed``."""
    if ((images < 0) | (images > 1)).any():
        raise ValueError("binarize expects intensities in [0, 1]")
    return torch.bernoulli(images, generator=torch.Generator().manual_seed(seed))


def pixel_fisher_weights(images: torch.Tensor, floor: float = 0.01) -> torch.Tensor:
    r"""The Bernoulli Fisher information of each pixel at the data's mean, :math:`w_i = \bar p_i(1 - \bar p_i)`.

    :math:`\bar p_i` is pixel :math:`i`'s mean over ``images`` (``(N, D)``, values in [0, 1]), clamped to
    :math:`[\text{floor}, 1 - \text{floor}]`, so every weight is at least :math:`\text{floor}(1 - \text{floor})`.
    A Bernoulli with logit :math:`\ell` has Fisher information :math:`\sigma(\ell)(1 - \sigma(\ell))` in
    :math:`\ell`: a pixel that is almost always off tells the likelihood almost nothing however far its logit
    moves. As the ``metric`` of :class:`~pyro_lid.distributions.transforms.ProjectedInjective`
    (``lidvae:metric=bernoulli``) this puts the decoder's margin in Fisher units at the mean image. The floor
    bounds how far the metric can stretch a column of :math:`Q` onto a saturated pixel (by at most
    :math:`\sqrt{0.25/w_{\min}}`, 5x at the default). Compute it from the training split only.

    :param float floor: in (0, 0.5).
    :returns: shape ``(D,)``, float64.
    """
    if not (isinstance(floor, (int, float)) and 0 < floor < 0.5):
        raise ValueError(f"floor must be a number in (0, 0.5) (every weight must be positive), got {floor!r}")
    if not isinstance(images, torch.Tensor) or images.dim() != 2 or images.shape[0] == 0:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"pixel_fisher_weights expects a non-empty (N, D) tensor of images, got {got}")
    if not torch.isfinite(images).all() or ((images < 0) | (images > 1)).any():
        raise ValueError("pixel_fisher_weights expects finite values in [0, 1]")
    mean = images.to(torch.float64).mean(0).clamp(floor, 1 - floor)
    return mean * (1 - mean)

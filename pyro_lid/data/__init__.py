"""Data sets: synthetic generators (built in), classical scenarios, MNIST / Fashion-MNIST from local files."""

from .images import binarize, load_images, read_idx
from .pinwheel import pinwheel
from .synthetic import synthetic_latent_data

__all__ = ["binarize", "load_images", "pinwheel", "read_idx", "synthetic_latent_data"]

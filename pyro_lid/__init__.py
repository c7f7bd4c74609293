"""pyro-lid: latent-identifiable VAEs for Pyro, built on Brenier maps."""

from . import distributions, nn

__version__ = "0.1.0"

__all__ = ["distributions", "nn", "__version__"]

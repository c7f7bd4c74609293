"""ArviZ, imported without its start-up notice about a coming refactor (pyro-lid targets 0.2x)."""

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*ArviZ is undergoing a major refactor.*")
    import arviz

__all__ = ["arviz"]

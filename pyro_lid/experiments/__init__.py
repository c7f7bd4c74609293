"""Named, reproducible experiments behind the command line."""

from .brenier_demo import run_brenier_demo

__all__ = ["run_brenier_demo"]

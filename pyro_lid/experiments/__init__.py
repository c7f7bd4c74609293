"""Named, reproducible experiments behind the command line."""

from .brenier_demo import run_brenier_demo
from .methods import METHODS, Method

__all__ = ["METHODS", "Method", "run_brenier_demo"]

"""``with_cache`` for the library's transforms, whose constructors take more than ``cache_size``.

torch's :meth:`~torch.distributions.Transform.with_cache` rebuilds a transform as ``type(self)(cache_size=...)``
and raises ``NotImplementedError`` for any transform with other constructor arguments, so wrappers that ask for
an uncached copy (``IndependentTransform``, ``ComposeTransform(..., cache_size=1)``, Pyro's reparameterizers)
failed on them. :class:`CopyWithCache` makes the copy as torch's own transforms would hold it: the same parameters.
"""

from __future__ import annotations

import copy

__all__ = ["CopyWithCache"]


class CopyWithCache:
    """Mixin (before the torch base class): :meth:`with_cache` by a shallow copy that shares every parameter,
    buffer and submodule with the original (training either trains both), with a cache of its own."""

    def with_cache(self, cache_size: int = 1):
        """This map with ``cache_size`` 0 or 1 (``self`` where it already has it). With 1 it returns its last
        result for the same input tensor object, as torch's cache does."""
        if cache_size == self._cache_size:
            return self
        if cache_size not in (0, 1):
            raise ValueError(f"cache_size must be 0 or 1, got {cache_size!r}")
        new = copy.copy(self)
        for name in ("_parameters", "_buffers", "_modules"):  # a module registered on the copy stays there
            if name in self.__dict__:
                new.__dict__[name] = dict(self.__dict__[name])
        new._cache_size, new._inv = cache_size, None
        if cache_size == 1:
            new._cached_x_y = None, None
        else:
            new.__dict__.pop("_cached_x_y", None)
        new._forget()
        return new

    def _forget(self) -> None:
        """Clear any memory of the map's own beyond torch's cache (none here)."""

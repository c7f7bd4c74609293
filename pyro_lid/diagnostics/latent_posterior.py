"""ArviZ view of an amortized posterior: q(z | x) for chosen data points beside the prior p(z)."""

from __future__ import annotations

import numpy as np
import torch

from .._arviz import arviz as az

__all__ = ["latent_inference_data", "plot_latent_posteriors", "plot_kl_per_dimension"]


@torch.no_grad()
def latent_inference_data(model, data: torch.Tensor, indices=None, num_samples: int = 500):
    r"""``InferenceData`` with ``posterior.z`` (draws of q(z | x_i) for the chosen rows) and ``prior.z``.

    Both groups have the same layout, ``z`` with dimensions ``(chain=1, draw, point, latent)``
    and the same ``point`` and ``latent`` coordinates, so ArviZ's functions that set a
    group beside another (``az.plot_dist_comparison``, ``az.plot_density`` with both
    groups) pair them coordinate by coordinate.

    The prior holds *independent* draws for each point, :math:`z_i^{(s)} \sim p(z)`
    i.i.d. over draws :math:`s` and points :math:`i`: in the generative model every data
    point has a latent of its own, drawn from the same prior, so this is the prior of the
    latents whose posteriors sit beside it (and the layout :func:`pyro_lid.infer.nuts_posterior`
    gives a per-point latent such as PPCA's :math:`z_n`). Repeating one set of draws across
    the points would give each (point, latent) pair the same marginal but would make the
    points' prior draws identical, a joint distribution the model does not have.

    :param model: an object with ``posterior(x)`` (a batch of distributions
        :math:`q(z \mid x_i)` with event shape ``(latent,)``) and ``prior()`` (:math:`p(z)`).
    :param torch.Tensor data: the data, one row per point.
    :param indices: the rows to show (default: the first five).
    :param int num_samples: draws per point, for each group.
    """
    indices = list(range(min(5, data.shape[0]))) if indices is None else list(indices)
    if not indices or max(indices) >= data.shape[0] or min(indices) < 0:
        raise ValueError(f"indices must be non-empty and within 0..{data.shape[0] - 1}, got {indices}")
    posterior = model.posterior(data[indices]).sample((num_samples,))  # (S, P, K)
    prior = model.prior().sample((num_samples, len(indices)))  # (S, P, K): independent per point
    return az.from_dict(
        posterior={"z": posterior.cpu().numpy()[None]},
        prior={"z": prior.cpu().numpy()[None]},
        coords={"point": np.asarray(indices), "latent": np.arange(posterior.shape[-1])},
        dims={"z": ["point", "latent"]},
        attrs={"model": type(model).__name__},
    )


def plot_latent_posteriors(idata, dims=None, max_dims: int = 8):
    """One panel per latent dimension: the prior (dashed) and each chosen point's posterior.

    A collapsed dimension shows every posterior on top of the prior. Returns the figure.
    """
    import matplotlib.pyplot as plt

    z_post = idata.posterior["z"].values[0]  # (S, P, K)
    z_prior = idata.prior["z"].values.reshape(-1, z_post.shape[-1])  # all prior draws, pooled over points
    dims = list(range(min(max_dims, z_post.shape[-1]))) if dims is None else list(dims)
    cols = min(4, len(dims))
    rows = -(-len(dims) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    points = idata.posterior["z"].coords["point"].values
    for ax, d in zip(axes.flat, dims):
        az.plot_kde(z_prior[:, d], ax=ax, plot_kwargs={"color": "0.3", "ls": "--"})
        for p in range(z_post.shape[1]):
            az.plot_kde(z_post[:, p, d], ax=ax, plot_kwargs={"color": f"C{p % 10}", "linewidth": 1})
        ax.set_title(f"z[{d}]")
    for ax in list(axes.flat)[len(dims) :]:
        ax.axis("off")
    fig.suptitle(f"{idata.attrs.get('model', '')}: prior (dashed) and q(z | x) for points {list(points)}")
    fig.tight_layout()
    return fig


def plot_kl_per_dimension(kl_per_dim, ax=None, title: str = "KL(q(z_d | x) || p(z_d)) per dimension"):
    """Bar chart of the mean KL of each latent dimension (nats); near-zero bars are collapsed dimensions."""
    import matplotlib.pyplot as plt

    if kl_per_dim is None:
        raise ValueError("no per-dimension KL: it needs a Gaussian guide and a standard-normal prior")
    values = np.asarray(kl_per_dim.detach().cpu() if isinstance(kl_per_dim, torch.Tensor) else kl_per_dim)
    ax = plt.gca() if ax is None else ax
    ax.bar(np.arange(len(values)), values)
    ax.set_xlabel("latent dimension")
    ax.set_ylabel("nats")
    ax.set_title(title)
    return ax

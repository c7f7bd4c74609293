r"""Demo: fit a Brenier flow :math:`y = \nabla\psi(x)`, :math:`x \sim N(0, I)`, to the pinwheel density by SVI."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
from tqdm.auto import tqdm

from ..data import pinwheel
from ..distributions.transforms import Brenier

__all__ = ["run_brenier_demo", "INVERSE_TOLERANCE", "LOGDET_TOLERANCE"]

#: The demo's pass marks for "exact" in float32: the round trip :math:`\max|\nabla\psi(\nabla\psi^{-1}(y)) - y|`
#: (Newton stops at :math:`10^{-5}(1 + \max|y|)`; about 3e-5 measured on the held-out points) and the largest
#: error of :math:`\log|\det\nabla^2\psi|` against autograd's, in nats (about 5e-7 measured). NaN fails both.
INVERSE_TOLERANCE = 1e-3
LOGDET_TOLERANCE = 1e-3


def run_brenier_demo(
    steps: int = 400,
    num_train: int = 4000,
    batch_size: int = 256,
    lr: float = 5e-3,
    seed: int = 0,
    plot: str | None = None,
    progress: bool | None = None,
) -> dict:
    """Train ``TransformedDistribution(Normal, [Brenier(2)])`` on pinwheel data with plain SVI.

    Reports held-out log-likelihood before and after training and against the best
    Gaussian, the inverse round-trip error on held-out data, the log-determinant
    against autograd, and the smallest Hessian eigenvalue against the convexity floor.
    """
    if steps < 1 or num_train < batch_size:
        raise ValueError(f"need steps >= 1 and num_train >= batch_size, got {steps}, {num_train}, {batch_size}")
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    train, _ = pinwheel(num_train)
    test, _ = pinwheel(2000)
    train, test = 2 * train, 2 * test
    transform = Brenier(2, [64, 64])
    flow = dist.TransformedDistribution(dist.Normal(torch.zeros(2), torch.ones(2)).to_event(1), [transform])

    def model(data):
        pyro.module("brenier", transform)
        with pyro.plate("data", data.shape[0]):
            pyro.sample("x", flow, obs=data)

    def guide(data):  # no latent variables: SVI is maximum likelihood here
        pass

    with torch.no_grad():
        ll_before = flow.log_prob(test).mean().item()
    svi = SVI(model, guide, Adam({"lr": lr}), Trace_ELBO())
    bar = tqdm(range(steps), desc="fitting Brenier flow", disable=None if progress is None else not progress)
    for _ in bar:
        idx = torch.randint(0, num_train, (batch_size,))
        loss = svi.step(train[idx]) / batch_size
        bar.set_postfix(nll=f"{loss:.3f}")
    with torch.no_grad():
        ll_after = flow.log_prob(test).mean().item()
        gaussian = dist.MultivariateNormal(train.mean(0), torch.cov(train.T))
        ll_gaussian = gaussian.log_prob(test).mean().item()
        x = transform.inv(test.clone())
        inverse_error = (transform(x.clone()) - test).abs().max().item()  # clone: bypass the cache
        min_eig = torch.linalg.eigvalsh(transform.jacobian(x)).min().item()
    sub = test[:20]
    logdet = transform.log_abs_det_jacobian(sub, transform(sub))
    autograd = torch.stack([torch.linalg.slogdet(torch.autograd.functional.jacobian(transform, s))[1] for s in sub])
    result = {
        "ll_before": ll_before,
        "ll_after": ll_after,
        "ll_gaussian": ll_gaussian,
        "inverse_max_residual": inverse_error,
        "logdet_max_error": (logdet - autograd).abs().max().item(),
        "min_hessian_eigenvalue": min_eig,
        "alpha_floor": transform.potential.alpha_floor,
    }
    if plot:
        _plot(flow, test, plot)
        result["plot"] = plot
    return result


def _plot(flow, test, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = torch.linspace(-5, 5, 120)
    xx, yy = torch.meshgrid(grid, grid, indexing="xy")
    with torch.no_grad():
        density = flow.log_prob(torch.stack([xx, yy], -1).reshape(-1, 2)).exp().reshape(xx.shape)
        samples = flow.sample((2000,))
    fig, axes = plt.subplots(1, 3, figsize=(12, 4), sharex=True, sharey=True)
    axes[0].scatter(*test.T, s=1)
    axes[0].set_title("pinwheel data (held out)")
    axes[1].contourf(xx, yy, density, levels=30)
    axes[1].set_title("Brenier flow density")
    axes[2].scatter(*samples.T, s=1, color="C1")
    axes[2].set_title("Brenier flow samples")
    for ax in axes:
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

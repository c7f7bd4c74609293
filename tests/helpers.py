"""Shared test helpers."""

import pyro.distributions as dist
import torch


class GaussianEncoderStub:
    """q(z | x) = N(x A^T, diag(s^2)) with fixed A, s; prior N(0, I): a posterior with closed-form metrics."""

    def __init__(self, weight, scale):
        self.weight, self.scale = weight, scale

    def posterior(self, x):
        return dist.Normal(x @ self.weight.T, self.scale.expand(x.shape[0], -1)).to_event(1)

    def prior(self):
        return dist.Normal(torch.zeros(self.weight.shape[0], dtype=self.weight.dtype), 1.0).to_event(1)


def perturb_(module: torch.nn.Module, scale: float = 0.5, seed: int = 1) -> torch.nn.Module:
    """Move every parameter away from its near-identity initialization, so tests see a curved map."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return module


def assert_resume_is_exact(make_model, train, val, checkpoint, epochs: int, interrupt: dict, **fit_kwargs):
    """Train ``make_model()`` for ``epochs`` straight, and again interrupted and resumed from ``checkpoint``;
    assert both end bit-for-bit equal. ``interrupt`` overrides the interrupted call's arguments
    (``{"epochs": k}``, or ``{"early_stopping_patience": 0}`` to stop after the first epoch).

    :returns: the histories of the straight, interrupted and resumed calls.
    """
    from pyro_lid.infer import fit

    straight = make_model()
    initial = {k: v.clone() for k, v in straight.state_dict().items()}
    straight_history = fit(straight, train, val, epochs=epochs, progress=False, **fit_kwargs)
    resumed = make_model()
    resumed.load_state_dict(initial)
    options = dict(epochs=epochs, checkpoint=checkpoint, progress=False, **fit_kwargs)
    interrupted_history = fit(resumed, train, val, **{**options, **interrupt})
    resumed_history = fit(resumed, train, val, resume=True, **options)
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    return straight_history, interrupted_history, resumed_history


def write_idx(path, array):
    """Write ``array`` as a gzipped unsigned-byte IDX file (the MNIST format)."""
    import gzip

    array = array.to(torch.uint8).numpy()
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def central_difference(f, param, index, eps=1e-6):
    """(f(param + eps e_index) - f(param - eps e_index)) / (2 eps), the parameter restored afterwards."""
    with torch.no_grad():
        old = param[index].item()
        param[index] = old + eps
        up = f().item()
        param[index] = old - eps
        down = f().item()
        param[index] = old
    return (up - down) / (2 * eps)


def exploding(model_class, after_steps: int):
    """A subclass of ``model_class`` whose ELBO becomes infinite from training step ``after_steps + 1`` on."""
    import pyro

    class Exploding(model_class):
        steps = 0

        def model(self, x, num_data=None):
            Exploding.steps += 1
            if Exploding.steps > after_steps:
                pyro.factor("boom", torch.tensor(float("inf")))
            return super().model(x, num_data)

    return Exploding

r"""Semi-amortized VAE (Kim et al. 2018): the encoder's guess, refined per data point.

For each data point the encoder gives :math:`\lambda_0 = (\mu(x), \log\sigma(x))`; then
``refine_steps`` steps of gradient ascent on that point's own ELBO,

.. math::

    \lambda_{k+1} = \lambda_k + \eta\,\nabla_\lambda\,\mathbb{E}_{\epsilon}\big[\log p(x, \mu + \sigma\epsilon)
                     - \log q_\lambda(\mu + \sigma\epsilon)\big],

with the decoder held fixed, give the refined posterior :math:`q_{\lambda_K}`. The
decoder is trained on :math:`q_{\lambda_K}` (the guide samples :math:`z` from it, with
:math:`\lambda_K` detached), and the encoder is trained *towards* it: the guide adds
:math:`\mathrm{KL}(q_{\lambda_K}\,\|\,q_{\lambda_0})` through ``pyro.factor``, which
enters the loss with a plus sign. Evaluation (``posterior``, hence the log-likelihood of
:func:`pyro_lid.diagnostics.collapse_report`) uses the refined posterior as the proposal.

Reference: Y. Kim, S. Wiseman, A. C. Miller, D. Sontag, A. M. Rush, "Semi-Amortized
Variational Autoencoders", ICML 2018.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from .vae import VAE

__all__ = ["SAVAE"]


class SAVAE(VAE):
    """VAE whose guide refines the encoder's output by per-data-point gradient steps.

    :param int refine_steps: :math:`K` (Kim et al. use 10 to 20).
    :param float refine_lr: step size :math:`\\eta` of the refinement.
    :param int refine_samples: Monte Carlo samples per refinement step.

    Other parameters as :class:`VAE`.
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 16,
        refine_steps: int = 10,
        refine_lr: float = 0.1,
        refine_samples: int = 1,
        **kwargs,
    ):
        if refine_steps < 0 or not refine_lr > 0 or refine_samples < 1:
            raise ValueError("need refine_steps >= 0, refine_lr > 0 and refine_samples >= 1")
        super().__init__(data_dim, latent_dim, **kwargs)
        self.refine_steps, self.refine_lr, self.refine_samples = refine_steps, refine_lr, refine_samples

    @property
    def extra_gradient_evaluations(self) -> int:
        """Decoder gradient evaluations per training step spent on refinement (for cost accounting)."""
        return self.refine_steps

    def local_elbo(self, x, loc, log_scale, num_samples=None) -> torch.Tensor:
        """Per-data-point ELBO estimate of :math:`q = \\mathcal{N}(loc, e^{2\\log\\sigma})`, shape ``(batch,)``."""
        q = dist.Normal(loc, log_scale.exp()).to_event(1)
        z = q.rsample((num_samples or self.refine_samples,))
        return (self.log_joint(x, z) - q.log_prob(z)).mean(0)

    def refine(self, x, loc, scale):
        """:math:`K` gradient-ascent steps on each point's ELBO from ``(loc, scale)``; decoder untouched."""
        loc, log_scale = loc.detach().clone(), scale.detach().log()
        params = [p for p in self.parameters() if p.requires_grad]
        with torch.enable_grad():  # also under no_grad (Predictive, evaluation)
            for p in params:
                p.requires_grad_(False)
            try:
                for _ in range(self.refine_steps):
                    loc.requires_grad_(True)
                    log_scale.requires_grad_(True)
                    gain = self.local_elbo(x, loc, log_scale).sum()
                    g_loc, g_log_scale = torch.autograd.grad(gain, [loc, log_scale])
                    loc = (loc + self.refine_lr * g_loc).detach()
                    log_scale = (log_scale + self.refine_lr * g_log_scale).detach()
            finally:
                for p in params:
                    p.requires_grad_(True)
        return loc, log_scale.exp()

    def guide(self, x, num_data=None):
        pyro.module("vae", self)
        self.check_data(x)
        x_in = self._encoder_input(x)
        loc0, scale0 = self.encoder(x_in)
        loc, scale = self.refine(x, loc0, scale0)
        with self._plate(x, num_data):
            # pull the encoder towards the refined posterior (a guide factor adds +KL to the loss)
            kl = torch.distributions.kl_divergence(dist.Normal(loc, scale), dist.Normal(loc0, scale0)).sum(-1)
            pyro.factor("encoder_to_refined", kl, has_rsample=True)
            with poutine.scale(scale=self.latent_scale):
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def posterior(self, x):
        """The refined posterior :math:`q_{\\lambda_K}(z \\mid x)` (the importance-sampling proposal)."""
        loc0, scale0 = self.encoder(self._encoder_input(self.check_data(x)))
        return dist.Normal(*self.refine(x, loc0, scale0)).to_event(1)

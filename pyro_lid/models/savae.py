r"""Semi-amortized VAE (Kim et al. 2018): the encoder's guess, refined per data point.

For each data point the encoder gives :math:`\lambda_0 = (\mu(x), \log\sigma(x))`; then
``refine_steps`` steps of gradient ascent on that point's own ELBO,

.. math::

    \lambda_{k+1} = \lambda_k + \eta\,\nabla_\lambda\,\mathbb{E}_{\epsilon}\big[\log p(x, \mu + \sigma\epsilon)
                     - \log q_\lambda(\mu + \sigma\epsilon)\big],

(each point's gradient scaled down to norm at most ``refine_max_norm``; with ``refine_momentum``
:math:`\mu`, heavy-ball steps :math:`v_{k+1} = \mu v_k + g_k`, :math:`\lambda_{k+1} = \lambda_k + \eta
v_{k+1}`), with the decoder held fixed, give the refined posterior :math:`q_{\lambda_K}`. The decoder is
trained on :math:`q_{\lambda_K}`: the guide samples :math:`z` from it, and the decoder's
gradient is :math:`\nabla_\theta\,\mathrm{ELBO}(\lambda_K, \theta)` with :math:`\lambda_K` held fixed
(with ``decoder_through_steps``, the total derivative through :math:`\lambda_K(\theta)` as well, as in
Kim et al.'s Algorithm 1). The encoder is trained in one of two ways:

- ``end_to_end=False`` (default): *towards* the refined parameters. :math:`\lambda_K` is
  detached and the guide adds :math:`\mathrm{KL}(q_{\lambda_K}\,\|\,q_{\lambda_0})`
  through ``pyro.factor``, which enters the loss with a plus sign. Cost: :math:`K` extra
  gradient evaluations per step.
- ``end_to_end=True``: *through* the steps, as in Kim et al.'s Algorithm 1. The refinement
  graph is kept (``create_graph``), so the encoder receives
  :math:`\frac{d\,\mathrm{ELBO}(\lambda_K)}{d\lambda_0}\frac{d\lambda_0}{d\phi}`
  by Hessian-vector products through all :math:`K` updates. Cost: about :math:`2K` extra (:math:`4K` with
  ``refine_checkpoint``, which keeps no step's graph and computes each step's ELBO twice more).

Evaluation (``posterior``, hence the log-likelihood of
:func:`pyro_lid.diagnostics.collapse_report`) uses the refined posterior as the proposal.

The refinement only needs the model's ``log_joint`` and its Gaussian encoder, so it
applies to every model of :mod:`pyro_lid.models`: :class:`SAVAE` is the VAE version and
``semi_amortized(LIDGMVAE)`` (say) the semi-amortized mixture-prior LID model.

Reference: Y. Kim, S. Wiseman, A. C. Miller, D. Sontag, A. M. Rush, "Semi-Amortized
Variational Autoencoders", ICML 2018.
"""

from __future__ import annotations

import functools

import pyro
import pyro.distributions as dist
import torch
import torch.utils.checkpoint
from pyro import poutine

from .vae import VAE

__all__ = ["SAVAE", "SemiAmortized", "checkpoint_refinement", "gaussian_elbo", "refine_gaussian",
           "register_semi_amortized", "semi_amortized"]  # fmt: skip


def gaussian_elbo(log_joint, x, loc, log_scale, num_samples: int = 1) -> torch.Tensor:
    """Per-data-point Monte Carlo ELBO :math:`\\mathbb{E}_q[\\log p(x, z) - \\log q(z)]` of the diagonal Gaussian
    :math:`q = \\mathcal{N}(loc, e^{2\\log\\sigma})` (reparameterized), shape ``(batch,)``."""
    q = dist.Normal(loc, log_scale.exp()).to_event(1)
    z = q.rsample((num_samples,))
    return (log_joint(x, z) - q.log_prob(z)).mean(0)


def refine_gaussian(log_joint, x, loc, log_scale, steps: int, lr: float, num_samples: int = 1, max_norm: float = 5.0,
                    differentiable: bool = False, frozen=(), momentum: float = 0.0, checkpoint_steps: bool = False,
                    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    r"""``steps`` steps of gradient ascent on each data point's own ELBO over its Gaussian :math:`(loc, \log\sigma)`,
    :math:`\lambda_{k+1} = \lambda_k + \eta\,g_k` with :math:`g_k = \min(1, c / \lVert\nabla_\lambda\rVert)\,
    \nabla_\lambda \mathrm{ELBO}(\lambda_k)` (``lr`` :math:`\eta`, ``max_norm`` :math:`c`), or with ``momentum``
    :math:`\mu > 0` heavy-ball steps :math:`v_{k+1} = \mu v_k + g_k`, :math:`\lambda_{k+1} = \lambda_k + \eta
    v_{k+1}` (:math:`v_0 = 0`, as in Kim et al.'s code): the refinement of SA-VAE (:class:`SemiAmortized`) and
    of :func:`~pyro_lid.diagnostics.amortization_gap`.

    ``frozen`` parameters (the model's) get no gradient while it runs, and are restored after. With
    ``differentiable`` (and grad mode on) the result stays a differentiable function of the initial values.
    ``checkpoint_steps`` (with ``differentiable``): each step's graph is not kept but computed again, with the
    same random draws, when it is needed (``torch.utils.checkpoint``, non-reentrant): no step's graph is kept
    between steps, for each step's ELBO computed twice more (its forward when the step takes its own
    gradient, its forward and gradient in the backward pass). The result and its gradients are the same.

    :returns: ``(loc, log_scale)``, detached unless ``differentiable``.
    """
    differentiable = differentiable and torch.is_grad_enabled()
    if not differentiable:
        loc, log_scale = loc.detach(), log_scale.detach()
    frozen = [p for p in frozen if p.requires_grad]
    step = functools.partial(_refinement_step, log_joint, x, lr=lr, num_samples=num_samples, max_norm=max_norm,
                             momentum=momentum, differentiable=differentiable, frozen=frozen)  # fmt: skip
    if differentiable and checkpoint_steps:
        step = functools.partial(torch.utils.checkpoint.checkpoint, step, use_reentrant=False)
    velocity = (None, None)
    with torch.enable_grad():  # also under no_grad (Predictive, evaluation)
        for _ in range(steps):
            loc, log_scale, *velocity = step(loc, log_scale, *velocity)
    if not differentiable:
        loc, log_scale = loc.detach(), log_scale.detach()
    return loc, log_scale


def _refinement_step(log_joint, x, loc, log_scale, velocity_loc, velocity_log_scale, *, lr, num_samples, max_norm,
                     momentum, differentiable, frozen):  # fmt: skip
    """One step of :func:`refine_gaussian`: ``(loc, log_scale, velocity_loc, velocity_log_scale)`` after it (the
    velocities ``None`` without momentum, and before the first step). The ``frozen`` parameters get no gradient in
    it: also when ``torch.utils.checkpoint`` computes it again, after the refinement has given them back theirs."""
    grads = [p.requires_grad for p in frozen]
    for p in frozen:
        p.requires_grad_(False)
    try:
        if not differentiable:
            loc, log_scale = loc.detach().requires_grad_(True), log_scale.detach().requires_grad_(True)
        gain = gaussian_elbo(log_joint, x, loc, log_scale, num_samples).sum()
        g_loc, g_log_scale = torch.autograd.grad(gain, [loc, log_scale], create_graph=differentiable)
    finally:
        for p, grad in zip(frozen, grads):
            p.requires_grad_(grad)
    norm = (g_loc.square().sum(-1, keepdim=True) + g_log_scale.square().sum(-1, keepdim=True)).sqrt()
    if momentum:
        clip = max_norm / norm.clamp_min(max_norm)
        g_loc, g_log_scale = clip * g_loc, clip * g_log_scale
        if velocity_loc is not None:
            g_loc, g_log_scale = momentum * velocity_loc + g_loc, momentum * velocity_log_scale + g_log_scale
        return loc + lr * g_loc, log_scale + lr * g_log_scale, g_loc, g_log_scale
    # as before momentum existed, operation for operation (the same numbers)
    step = lr * (max_norm / norm.clamp_min(max_norm))
    return loc + step * g_loc, log_scale + step * g_log_scale, None, None


class SemiAmortized:
    """Mixin that makes any model of :mod:`pyro_lid.models` semi-amortized; put it first among the bases.

    :param int refine_steps: :math:`K` (Kim et al. use 10 to 20).
    :param float refine_lr: step size :math:`\\eta` of the refinement.
    :param int refine_samples: Monte Carlo samples per refinement step.
    :param bool end_to_end: train the encoder by backpropagating through the refinement
        (else towards the refined posterior).
    :param float refine_max_norm: each data point's step direction :math:`\\nabla_\\lambda` is
        scaled down to at most this norm (5, as in Kim et al.'s code): a 784-pixel ELBO has
        gradients large enough to make plain steps diverge.
    :param float refine_momentum: heavy-ball momentum :math:`\\mu \\in [0, 1)` of the steps (Kim et al.: 0.5).
    :param bool refine_checkpoint: with ``end_to_end`` (refused without), keep no step's graph but compute each
        again when it is needed (gradient checkpointing): about a third of the memory a training step grows by,
        for each step's ELBO computed twice more (1.6-2.7 times the time of a step, measured); the same losses and
        gradients. No part of a recipe (:attr:`refine_checkpoint`); :attr:`extra_gradient_evaluations` counts it.
    :param bool decoder_through_steps: with ``end_to_end``, the model's parameters (the decoder's, and a learned
        prior's) also get their gradient through the refinement (Kim et al.'s Algorithm 1: :math:`\\lambda_K`
        depends on :math:`\\theta`); otherwise they are constants of the steps. The gradient evaluations are as
        many, each a little dearer (the backward pass also reaches the parameters).

    Kim et al. step on the mini-batch's mean ELBO with lr 1 and clip the whole mini-batch's gradient; here every
    point steps on its own ELBO and is clipped alone, so that its posterior does not depend on the batch it is
    evaluated in (evaluation batches differ from training ones). Their lr 1 on the mean over a batch of
    :math:`B` is a per-point ``refine_lr`` of :math:`1/B`, and their clip :math:`c` of the batch's gradient,
    for points of equal gradient norm, a per-point ``refine_max_norm`` of :math:`c\\sqrt{B}`. Three differences
    remain: they step in :math:`(\\mu, \\log\\sigma^2)`, here in :math:`(\\mu, \\log\\sigma)` (the same step size
    moves :math:`\\log\\sigma` 4 times less there, unclipped), they clip the two blocks apart, here together;
    and their refinement's KL term carries the annealed weight, here the full prior.

    Other parameters are the base model's (``name`` included). Models with an enumerated
    cluster variable (``GMVAE(enumerate_clusters=True)``) have no single Gaussian guide to
    refine and are refused.
    """

    def __init__(
        self,
        *args,
        refine_steps: int = 10,
        refine_lr: float = 0.1,
        refine_samples: int = 1,
        end_to_end: bool = False,
        refine_max_norm: float = 5.0,
        refine_momentum: float = 0.0,
        decoder_through_steps: bool = False,
        refine_checkpoint: bool = False,
        **kwargs,
    ):
        if refine_steps < 0 or not refine_lr > 0 or refine_samples < 1 or not refine_max_norm > 0:
            raise ValueError("need refine_steps >= 0, refine_lr > 0, refine_samples >= 1 and refine_max_norm > 0")
        if (
            isinstance(refine_momentum, bool)
            or not isinstance(refine_momentum, (int, float))
            or not (0 <= refine_momentum < 1)
        ):
            raise ValueError(f"refine_momentum must be a number in [0, 1), got {refine_momentum!r}")
        for flag, value in (("end_to_end", end_to_end), ("decoder_through_steps", decoder_through_steps)):
            if not isinstance(value, bool) and value not in (0, 1):  # bool("no") would be True
                raise ValueError(f"{flag} must be True or False, got {value!r}")
        if decoder_through_steps and not end_to_end:
            raise ValueError("decoder_through_steps needs end_to_end=True: only then is the refinement differentiated")
        super().__init__(*args, **kwargs)
        if getattr(self, "enumerate_clusters", False):
            raise ValueError("semi-amortized refinement needs the summed-out mixture prior (enumerate_clusters=False)")
        self.refine_steps, self.refine_lr, self.refine_samples = refine_steps, refine_lr, refine_samples
        self.end_to_end = bool(end_to_end)
        self.refine_max_norm = float(refine_max_norm)
        self.refine_momentum, self.decoder_through_steps = float(refine_momentum), bool(decoder_through_steps)
        self.refine_checkpoint = refine_checkpoint

    @property
    def refine_checkpoint(self) -> bool:
        """Whether the end-to-end refinement's steps are recomputed in the backward pass rather than kept
        (:func:`refine_gaussian`'s ``checkpoint_steps``). It changes memory and time, not a number, so it is no part
        of a run's recipe (kept as ``_refine_checkpoint``): a run that ran out of memory resumes with it."""
        return self._refine_checkpoint

    @refine_checkpoint.setter
    def refine_checkpoint(self, value: bool) -> None:
        if not isinstance(value, bool) and value not in (0, 1):
            raise ValueError(f"refine_checkpoint must be True or False, got {value!r}")
        if value and not self.end_to_end:
            raise ValueError("refine_checkpoint needs end_to_end=True: only then are the steps' graphs kept")
        self._refine_checkpoint = bool(value)

    @property
    def extra_gradient_evaluations(self) -> int:
        """Decoder gradient evaluations per training step spent on refinement (for cost accounting):
        :math:`K` forward, and as many Hessian-vector products back through them when end to end. With
        ``refine_checkpoint`` each step's ELBO is computed twice more (once when its own gradient is taken, once in
        the backward pass, with its gradient): :math:`2K` more, counting a forward pass as a whole evaluation."""
        again = 2 * self.refine_steps if self.end_to_end and self.refine_checkpoint else 0
        return self.refine_steps * (2 if self.end_to_end else 1) + again

    def local_elbo(self, x, loc, log_scale, num_samples=None) -> torch.Tensor:
        """Per-data-point ELBO estimate of :math:`q = \\mathcal{N}(loc, e^{2\\log\\sigma})`, shape ``(batch,)``."""
        return gaussian_elbo(self.log_joint, x, loc, log_scale, num_samples or self.refine_samples)

    def refine(self, x, loc, scale, differentiable: bool = False):
        """:math:`K` gradient-ascent steps on each point's ELBO from ``(loc, scale)``; decoder untouched.

        With ``differentiable`` the result stays a differentiable function of ``(loc, scale)``
        (the steps' graph is kept), and with ``decoder_through_steps`` of the model's parameters too;
        otherwise those are constants of the steps.
        """
        through = differentiable and torch.is_grad_enabled() and self.decoder_through_steps
        loc, log_scale = refine_gaussian(
            self.log_joint, x, loc, scale.log(), self.refine_steps, self.refine_lr, self.refine_samples,
            self.refine_max_norm, differentiable, frozen=() if through else self.parameters(),
            momentum=self.refine_momentum, checkpoint_steps=self.refine_checkpoint,
        )  # fmt: skip
        return loc, log_scale.exp()

    def guide(self, x, num_data=None):
        self._register()
        x = self.check_data(x)
        x_in = self._encoder_input(x)
        loc0, scale0 = self.encoder(x_in)
        loc, scale = self.refine(x, loc0, scale0, differentiable=self.end_to_end)
        with self._plate(x, num_data):
            if not self.end_to_end:  # pull the encoder towards the refined posterior (+KL in the loss)
                kl = torch.distributions.kl_divergence(dist.Normal(loc, scale), dist.Normal(loc0, scale0)).sum(-1)
                pyro.factor("encoder_to_refined", kl, has_rsample=True)
            with poutine.scale(scale=self.latent_scale):
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def posterior(self, x):
        """The refined posterior :math:`q_{\\lambda_K}(z \\mid x)` (the importance-sampling proposal)."""
        loc0, scale0 = self.encoder(self._encoder_input(self.check_data(x)))
        return dist.Normal(*self.refine(x, loc0, scale0)).to_event(1)


def checkpoint_refinement(model) -> bool:
    """Switch on ``refine_checkpoint`` where it applies, a :class:`SemiAmortized` model that refines end to end;
    whether it did. The option changes memory and time, not the numbers, so a run may be resumed with or without."""
    applies = isinstance(model, SemiAmortized) and model.end_to_end
    if applies:
        model.refine_checkpoint = True
    return applies


class SAVAE(SemiAmortized, VAE):
    """The semi-amortized VAE of Kim et al. 2018: :class:`SemiAmortized` over :class:`~pyro_lid.models.VAE`."""


_SEMI_AMORTIZED: dict = {VAE: SAVAE}


def register_semi_amortized(model_class: type, semi_amortized_class: type) -> None:
    """Name the semi-amortized version of ``model_class`` (as :class:`SAVAE` is :class:`VAE`'s)."""
    if not (issubclass(semi_amortized_class, SemiAmortized) and issubclass(semi_amortized_class, model_class)):
        raise ValueError(f"{semi_amortized_class.__name__} is not SemiAmortized over {model_class.__name__}")
    _SEMI_AMORTIZED[model_class] = semi_amortized_class


def semi_amortized(model_class: type) -> type:
    """The semi-amortized version of a model class, e.g. ``semi_amortized(LIDGMVAE)(784, 16, refine_steps=10)``."""
    if not (isinstance(model_class, type) and issubclass(model_class, VAE)):
        raise ValueError(f"semi_amortized needs a model class of pyro_lid.models, got {model_class!r}")
    if model_class not in _SEMI_AMORTIZED:
        _SEMI_AMORTIZED[model_class] = type(f"SemiAmortized{model_class.__name__}", (SemiAmortized, model_class), {})
    return _SEMI_AMORTIZED[model_class]

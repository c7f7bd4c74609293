r"""Variational autoencoders as Pyro model/guide pairs: VAE, LIDVAE, GMVAE, LIDGMVAE.

All share one generative structure and one amortized guide,

.. math::

    z \sim p(z), \quad x \mid z \sim p(x \mid z); \qquad q(z \mid x) = \mathcal{N}(\mu(x), \mathrm{diag}\,\sigma^2(x)),

and differ only in their parts: the likelihood (an MLP, or the injective
:class:`~pyro_lid.distributions.IdentifiableLikelihood` for the LID models) and the
prior (standard normal, or a learned Gaussian mixture for the GM models). Train any of
them with plain Pyro::

    model = LIDVAE(data_dim=784, latent_dim=16)
    svi = SVI(model.model, model.guide, Adam({"lr": 1e-3}), Trace_ELBO())
    svi.step(x_batch)

(``model.default_loss()`` is the ELBO each model is meant for: ``TraceEnum_ELBO`` for a GMVAE that enumerates
its cluster, where ``Trace_ELBO`` would sample the cluster and fall back to a score-function estimator.)

Each model registers its parameters with Pyro's parameter store under its ``name`` (see
:class:`VAE`), so several models can train side by side in one script, each with its own
``SVI``.

``beta`` (and the schedule factor ``kl_weight`` that :func:`pyro_lid.infer.fit` sets)
scale the latent sites of model and guide alike with ``poutine.scale``, which turns the
ELBO into :math:`\mathbb{E}_q\log p(x\mid z) - \beta\,\mathrm{KL}(q(z\mid x)\,\|\,p(z))`.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO

from ..distributions.likelihoods import IdentifiableLikelihood
from .networks import BatchNormGaussianEncoder, GaussianEncoder, MLPLikelihood, mlp
from .param_store import ParamStoreName
from .priors import GaussianMixturePrior, StandardNormalPrior

__all__ = ["VAE", "BNVAE", "BatchNormalized", "LIDVAE", "ILLIDVAE", "GMVAE", "LIDGMVAE", "cluster_accuracy"]

#: The name a model takes in Pyro's parameter store when none is given and it is free.
DEFAULT_NAME = "vae"


class VAE(ParamStoreName, nn.Module):
    """A VAE with an MLP likelihood and a standard-normal prior (the parts can be swapped).

    :param int data_dim: number of observed variables :math:`D` (data of shape ``(N, D)``).
    :param int latent_dim: :math:`K`.
    :param hidden_dims: widths of the encoder MLP (and of the MLP decoder, reversed).
    :param likelihood: ``"bernoulli"``, ``"normal"``, ``"categorical"`` or a family instance.
    :param float beta: weight of the KL term (beta-VAE); 1 is the ELBO.
    :param prior: a prior module (default :class:`StandardNormalPrior`).
    :param decoder: a likelihood module mapping ``z`` to a distribution (default :class:`MLPLikelihood`).
    :param str name: the prefix of this model's parameters in Pyro's parameter store
        (``"<name>$$$encoder.loc.weight"``, ...). Given, it is used as is, and running the model
        while another module's parameters hold that name raises a ``ValueError``: with a shared
        name, ``pyro.module`` would hand one model's ``SVI`` the other model's parameters and the
        first model would silently not train. Left ``None`` (the default), the model takes
        ``"vae"``, the name every model used before this argument existed, unless other
        parameters hold it in the store; then the first free of ``"vae_1"``, ``"vae_2"``, ....
        It keeps that name while its parameters stay in the store and chooses again after
        ``pyro.clear_param_store()``. So two models in one store (a VAE beside a LIDVAE, or a
        model beside its ``copy.deepcopy``) never collide and both train, while a lone model,
        and any model trained by :func:`~pyro_lid.infer.fit` (which clears the store), is always
        ``"vae"``. That matters because Pyro optimizers key their state by these names, and
        :func:`~pyro_lid.infer.fit` checkpoints that state: a name made per instance (class
        name and a counter, or ``id``) would differ in the process that resumes, whenever it
        builds its models in another order, and the optimizer state would silently not be
        restored. Give explicit names when several models share a store and their names must
        be the same in another process (for example, when you save their optimizer states
        yourself). The name is not part of :meth:`state_dict`.
    :param likelihood_kwargs: e.g. ``scale=0.1`` (normal) or ``num_classes=10`` (categorical).
    """

    default_store_name = DEFAULT_NAME

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 16,
        hidden_dims: Sequence[int] = (512,),
        likelihood="bernoulli",
        beta: float = 1.0,
        prior: nn.Module | None = None,
        decoder: nn.Module | None = None,
        *,
        name: str | None = None,
        **likelihood_kwargs,
    ):
        super().__init__()
        self._init_store_name(name)
        if not isinstance(data_dim, int) or data_dim < 1 or not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(f"data_dim and latent_dim must be positive integers, got {data_dim!r}, {latent_dim!r}")
        if not beta > 0:
            raise ValueError(f"beta must be > 0, got {beta!r}")
        self.data_dim, self.latent_dim, self.beta = data_dim, latent_dim, float(beta)
        self.kl_weight = 1.0  # schedule factor, set by pyro_lid.infer.fit
        self.encoder = self._build_encoder(hidden_dims)
        self.decoder = decoder or MLPLikelihood(
            latent_dim, data_dim, likelihood, tuple(reversed(hidden_dims)), **likelihood_kwargs
        )
        self.prior = prior or StandardNormalPrior(latent_dim)

    def _build_encoder(self, hidden_dims):
        return GaussianEncoder(self.data_dim, self.latent_dim, hidden_dims)

    # ------------------------------------------------------------------ checks
    def check_data(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as the likelihood scores it, or a ``ValueError`` naming the problem: the shape must be
        ``(batch, data_dim)``, the values finite and in the likelihood's support (binary for Bernoulli,
        class indices for categorical). Integer, boolean and other floating dtypes are converted to
        the model's (float64 data for a float32 model lose only precision they cannot use)."""
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.data_dim:
            raise ValueError(
                f"{type(self).__name__} expects data of shape (batch, {self.data_dim}), "
                f"got {tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}"
            )
        if x.is_floating_point() and not torch.isfinite(x).all():
            raise ValueError(f"{type(self).__name__} got data with {int((~torch.isfinite(x)).sum())} NaN/inf entries")
        family = getattr(self.decoder, "family", None)
        dtype = next(self.parameters()).dtype
        return family.prepare(x, dtype) if family is not None else x

    @property
    def latent_scale(self) -> float:
        """beta times the schedule factor, kept above 1e-6 (``poutine.scale`` needs a positive scale)."""
        return max(self.beta * self.kl_weight, 1e-6)

    def default_loss(self):
        """The ELBO this model trains with by default."""
        return Trace_ELBO()

    def _plate(self, x, num_data):
        batch = x.shape[0]
        return pyro.plate("data", size=num_data or batch, subsample=torch.arange(batch, device=x.device))

    def _encoder_input(self, x):
        dtype = next(self.parameters()).dtype
        return x if x.dtype == dtype else x.to(dtype)

    # ------------------------------------------------------------------ Pyro
    def model(self, x: torch.Tensor, num_data: int | None = None) -> None:
        """Generative model; ``num_data`` (the data-set size) scales a mini-batch's log-likelihood."""
        self._register()
        x = self.check_data(x)
        with self._plate(x, num_data):
            with poutine.scale(scale=self.latent_scale):
                z = pyro.sample("z", self.prior())
            pyro.sample("x", self.decoder(z), obs=x)

    def guide(self, x: torch.Tensor, num_data: int | None = None) -> None:
        """Amortized guide :math:`q(z \\mid x)`."""
        self._register()
        x = self.check_data(x)
        with self._plate(x, num_data):
            with poutine.scale(scale=self.latent_scale):
                pyro.sample("z", self.encoder.distribution(self._encoder_input(x)))

    # ------------------------------------------------------------------ for diagnostics
    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        """:math:`q(z \\mid x)` with batch shape ``(batch,)`` and event shape ``(K,)``."""
        return self.encoder.distribution(self._encoder_input(self.check_data(x)))

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """:math:`\\log p(x \\mid z) + \\log p(z)` for ``z`` of shape ``(..., batch, K)`` (mixture clusters summed)."""
        x = self.check_data(x)
        want = (x.shape[0], self.latent_dim)
        if not isinstance(z, torch.Tensor) or z.dim() < 2 or tuple(z.shape[-2:]) != want:
            got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(
                f"{type(self).__name__}.log_joint takes z of shape (..., {want[0]}, {want[1]}) for "
                f"{want[0]} data points and {want[1]} latents, got {got}"
            )
        return self.decoder(z).log_prob(x) + self.prior().log_prob(z)

    def cluster(self, x: torch.Tensor) -> torch.Tensor:
        """Most probable mixture component of each data point (GM models only)."""
        if not isinstance(self.prior, GaussianMixturePrior):
            raise ValueError(f"{type(self).__name__} has no mixture prior, hence no clusters")
        return self.prior.cluster_log_posterior(self.posterior(x).mean).argmax(-1)


class BatchNormalized:
    """Mixin that gives any model of :mod:`pyro_lid.models` BN-VAE's encoder; put it first among the bases.

    The base model's encoder (an MLP's, an LSTM's) is wrapped by
    :meth:`BatchNormGaussianEncoder.around <pyro_lid.models.networks.BatchNormGaussianEncoder.around>`:
    batch-normalized posterior means with the fixed scale ``gamma``, so that the expected KL is at least
    ``latent_dim * gamma**2 / 2`` nats (Zhu et al. 2020).

    :param float gamma: the fixed batch-norm scale (> 0). Other parameters are the base model's.
    """

    def __init__(self, *args, gamma: float = 0.5, **kwargs):
        self.gamma = gamma  # checked by the encoder, which the base class builds through _build_encoder
        super().__init__(*args, **kwargs)

    def _build_encoder(self, hidden_dims):
        return BatchNormGaussianEncoder.around(super()._build_encoder(hidden_dims), self.gamma)


class BNVAE(BatchNormalized, VAE):
    """BN-VAE (Zhu et al. 2020): :class:`BatchNormalized` over :class:`VAE`, e.g. ``BNVAE(784, 16, gamma=0.5)``."""


#: The identifiable decoder's default construction and margin, chosen by the fidelity study
#: (docs/results.md, Run C): at the full Fashion-MNIST budget the projected decoder with margin 2
#: kept every unit informative at the VAE's likelihood; margin 1 let units go dark, margin 3 cost LL.
DEFAULT_CONSTRUCTION, DEFAULT_MARGIN = "projection", 2.0
#: LIDGMVAE's default margin: at margin 2 the mixture model's weakest unit carried 0.009 nats at the full
#: Fashion-MNIST budget; at 3 every unit carried more than 0.01 at a likelihood still above GMVAE's (Run C).
MIXTURE_DEFAULT_MARGIN = 3.0


def _identifiable_decoder(latent_dim, data_dim, likelihood, hidden_dims, icnn_hidden_dims, alpha_floor, injective,
                          default_margin=DEFAULT_MARGIN):  # fmt: skip
    """The injective likelihood of the LID models. ``injective`` holds ``construction`` (``"projection"``,
    the default, whose free MLP has the VAE decoder's widths, or ``"brenier"``, the paper's), ``margin``
    (default ``default_margin`` for the projection), ``inner`` and the likelihood's own options."""
    options = dict(injective)
    options.setdefault("construction", DEFAULT_CONSTRUCTION)
    if options["construction"] == "projection":
        options.setdefault("margin", default_margin)
        latent_widths, output_widths = icnn_hidden_dims, tuple(reversed(hidden_dims))
    else:
        latent_widths = output_widths = icnn_hidden_dims
    return IdentifiableLikelihood(
        latent_dim, data_dim, likelihood, latent_widths, output_widths, alpha_floor, **options
    )


class LIDVAE(VAE):
    r"""Latent-identifiable VAE: the VAE with an injective likelihood :math:`p(x\mid z) = \mathrm{ExpFam}(g(z))`.

    The default decoder is the projected one,
    :math:`g(z) = Q(s\odot z) + (I - QQ^\top)\,m(z) + c` with a fixed random orthonormal
    :math:`Q` (D x K), :math:`s \ge` ``margin`` = 2 and the VAE's MLP :math:`m`
    (:class:`~pyro_lid.distributions.transforms.ProjectedInjective`): :math:`Q^\top g(z) = s\odot z
    + Q^\top c`, so :math:`g` is injective with every Jacobian singular value at least 2, and
    :math:`s\odot z = \nabla\psi(z)` for the strongly convex :math:`\psi(z) = \tfrac12\sum_i s_i z_i^2`:
    the likelihood is still a Brenier-map likelihood, with the simplest Brenier map. Why this default:
    the paper's construction :math:`\nabla\psi_D\circ\mathrm{pad}\circ\nabla\psi_K` (``construction="brenier"``)
    costs about 2x a VAE step and trails the VAE's likelihood; with margin 1 the projected decoder
    matches the VAE's likelihood but units go dark at the full budget; margin 2 kept all 64 units
    informative at the VAE's likelihood over seeds (docs/results.md, Run C).

    :param icnn_hidden_dims: widths of the ICNN potentials (``construction="brenier"``, or ``inner="brenier"``).
    :param float alpha_floor: strong-convexity floor of both potentials of ``construction="brenier"`` (the
        injectivity margin of the decoder is at least its square).
    :param likelihood_kwargs: the likelihood's options, and the construction of
        :class:`~pyro_lid.distributions.IdentifiableLikelihood`: ``construction`` (``"projection"``,
        the default, whose free part has the VAE decoder's widths, ``hidden_dims`` reversed; or
        ``"brenier"``, the paper's), ``margin`` (default 2.0), ``inner``.

    Other parameters (``name`` included) as :class:`VAE`.
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 16,
        hidden_dims: Sequence[int] = (512,),
        likelihood="bernoulli",
        beta: float = 1.0,
        icnn_hidden_dims: Sequence[int] = (512,),
        alpha_floor: float = 1e-2,
        prior: nn.Module | None = None,
        *,
        name: str | None = None,
        **likelihood_kwargs,
    ):
        decoder = _identifiable_decoder(
            latent_dim, data_dim, likelihood, hidden_dims, icnn_hidden_dims, alpha_floor, likelihood_kwargs
        )
        super().__init__(data_dim, latent_dim, hidden_dims, likelihood, beta, prior=prior, decoder=decoder, name=name)


class ILLIDVAE(LIDVAE):
    r"""IL-LIDVAE (Kinoshita et al. 2023): LIDVAE with an explicit strong-convexity constant.

    Both Brenier potentials satisfy :math:`\nabla^2\psi \succeq L I`, so every singular value
    of the decoder map's Jacobian is at least :math:`L^2`: a larger ``strong_convexity``
    guarantees more information in :math:`z` at some cost in fidelity. It keeps the paper's
    construction (``construction="brenier"``): it is a published baseline, defined by it.

    :param float strong_convexity: :math:`L > 0`. Other parameters (``name`` included) as :class:`LIDVAE`.
    """

    def __init__(self, data_dim: int, latent_dim: int = 16, strong_convexity: float = 0.5, **kwargs):
        if "alpha_floor" in kwargs:
            raise ValueError("IL-LIDVAE sets alpha_floor from strong_convexity; pass only strong_convexity")
        self.strong_convexity = float(strong_convexity)
        kwargs.setdefault("construction", "brenier")  # the published method: both maps Brenier maps
        super().__init__(data_dim, latent_dim, alpha_floor=strong_convexity, **kwargs)


class GMVAE(VAE):
    r"""VAE with a learned Gaussian-mixture prior.

    By default the cluster :math:`y` is summed out of the prior and the model trains with
    ``Trace_ELBO``. With ``enumerate_clusters=True`` the model samples :math:`y` explicitly,
    the guide is :math:`q(y\mid x)\,q(z\mid x, y)`, and training uses ``TraceEnum_ELBO``,
    which sums over :math:`y` exactly (as in the paper).

    :param int num_components: :math:`C`.
    :param bool learn_weights: learn the mixture weights (else uniform).
    :param bool enumerate_clusters: explicit, enumerated cluster variable.
    :param cluster_init_epochs: :func:`~pyro_lid.infer.fit` puts the components on k-means clusters
        of the encoder's posterior means after this many epochs
        (:class:`~pyro_lid.infer.engine.callbacks.ClusterInitialization`); ``None``: components keep
        their random start, as in Dilokthanakul et al. From a random start every component merges
        into one on Fashion-MNIST (cluster accuracy 0.10); after one warm-up epoch they stay apart.
        ``"auto"`` (the default): 1, or ``None`` with ``enumerate_clusters``, where :math:`q(y\mid x)`
        already labels the components and moving them would scramble its labels.

    Other parameters (``name`` included) as :class:`VAE`.
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 16,
        hidden_dims: Sequence[int] = (512,),
        likelihood="bernoulli",
        beta: float = 1.0,
        num_components: int = 10,
        learn_weights: bool = True,
        enumerate_clusters: bool = False,
        decoder: nn.Module | None = None,
        *,
        cluster_init_epochs: int | None | str = "auto",
        name: str | None = None,
        **likelihood_kwargs,
    ):
        if cluster_init_epochs == "auto":
            cluster_init_epochs = None if enumerate_clusters else 1
        if cluster_init_epochs is not None and (
            isinstance(cluster_init_epochs, bool) or not isinstance(cluster_init_epochs, int) or cluster_init_epochs < 1
        ):
            got = repr(cluster_init_epochs)
            raise ValueError(f"cluster_init_epochs must be 'auto', None or an integer >= 1, got {got}")
        self.cluster_init_epochs = cluster_init_epochs
        self.enumerate_clusters = enumerate_clusters
        self.num_components = num_components
        prior = GaussianMixturePrior(latent_dim, num_components, learn_weights)
        super().__init__(
            data_dim, latent_dim, hidden_dims, likelihood, beta, prior, decoder, name=name, **likelihood_kwargs
        )
        if enumerate_clusters:
            self.cluster_encoder = mlp([data_dim, *hidden_dims, num_components])

    def _build_encoder(self, hidden_dims):
        extra = self.num_components if self.enumerate_clusters else 0
        return GaussianEncoder(self.data_dim + extra, self.latent_dim, hidden_dims)

    def default_loss(self):
        return TraceEnum_ELBO(max_plate_nesting=1) if self.enumerate_clusters else Trace_ELBO()

    def _conditional_encoder(self, x, y):
        """Parameters of :math:`q(z \\mid x, y)` for cluster indices ``y`` broadcastable against ``x``'s batch."""
        onehot = F.one_hot(y, self.num_components).to(x.dtype)
        shape = torch.broadcast_shapes(onehot.shape[:-1], x.shape[:-1])
        inputs = torch.cat([x.expand(shape + x.shape[-1:]), onehot.expand(shape + onehot.shape[-1:])], -1)
        return self.encoder(inputs)

    def model(self, x, num_data=None):
        if not self.enumerate_clusters:
            return super().model(x, num_data)
        self._register()
        x = self.check_data(x)
        with self._plate(x, num_data):
            with poutine.scale(scale=self.latent_scale):
                y = pyro.sample("y", self.prior.mixing())
                locs, scales = self.prior.locs[y], self.prior.scales[y]
                z = pyro.sample("z", dist.Normal(locs, scales).to_event(1))
            pyro.sample("x", self.decoder(z), obs=x)

    def guide(self, x, num_data=None):
        if not self.enumerate_clusters:
            return super().guide(x, num_data)
        self._register()
        x = self.check_data(x)
        x = self._encoder_input(x)
        with self._plate(x, num_data):
            with poutine.scale(scale=self.latent_scale):
                y = pyro.sample("y", dist.Categorical(logits=self.cluster_encoder(x)), infer={"enumerate": "parallel"})
                loc, scale = self._conditional_encoder(x, y)
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def posterior(self, x):
        """:math:`q(z\\mid x)`; with enumerated clusters the mixture :math:`\\sum_y q(y\\mid x)\\,q(z\\mid x, y)`."""
        if not self.enumerate_clusters:
            return super().posterior(x)
        x = self._encoder_input(self.check_data(x))
        ys = torch.arange(self.num_components, device=x.device).unsqueeze(-1)  # (C, 1)
        loc, scale = self._conditional_encoder(x, ys)  # (C, B, K)
        components = dist.Normal(loc.transpose(0, 1), scale.transpose(0, 1)).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.cluster_encoder(x)), components)

    def cluster(self, x):
        if not self.enumerate_clusters:
            return super().cluster(x)
        return self.cluster_encoder(self._encoder_input(self.check_data(x))).argmax(-1)


class LIDGMVAE(GMVAE):
    """Latent-identifiable GMVAE: the mixture-prior VAE with the injective likelihood of :class:`LIDVAE`
    (by default the projected decoder with margin 3, :data:`MIXTURE_DEFAULT_MARGIN`; ``construction="brenier"``
    for the paper's).

    Why margin 3 and not LIDVAE's 2: a mixture prior's components are narrower than a unit normal, so a unit
    the decoder reads at slope 2 can still carry almost nothing. At the full Fashion-MNIST budget (three seeds)
    margin 2 left the weakest unit at 0.009 nats of I(x; z_d); margin 3 put every unit above 0.01 nats with a
    likelihood still above GMVAE's, at slightly lower cluster accuracy (``docs/results.md``, Run C).

    Parameters as :class:`GMVAE` (``name`` and ``cluster_init_epochs`` included) plus ``icnn_hidden_dims``,
    ``alpha_floor`` and the construction's options (see :class:`LIDVAE`).
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 16,
        hidden_dims: Sequence[int] = (512,),
        likelihood="bernoulli",
        beta: float = 1.0,
        num_components: int = 10,
        learn_weights: bool = True,
        enumerate_clusters: bool = False,
        icnn_hidden_dims: Sequence[int] = (512,),
        alpha_floor: float = 1e-2,
        *,
        cluster_init_epochs: int | None | str = "auto",
        name: str | None = None,
        **likelihood_kwargs,
    ):
        decoder = _identifiable_decoder(
            latent_dim, data_dim, likelihood, hidden_dims, icnn_hidden_dims, alpha_floor, likelihood_kwargs,
            MIXTURE_DEFAULT_MARGIN,
        )  # fmt: skip
        super().__init__(
            data_dim,
            latent_dim,
            hidden_dims,
            likelihood,
            beta,
            num_components,
            learn_weights,
            enumerate_clusters,
            decoder,
            cluster_init_epochs=cluster_init_epochs,
            name=name,
        )


def cluster_accuracy(clusters: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy after mapping each cluster to its most frequent label (the usual GMVAE cluster accuracy)."""
    if clusters.shape != labels.shape:
        raise ValueError(f"clusters and labels must have one shape, got {tuple(clusters.shape)}, {tuple(labels.shape)}")
    correct = 0
    for c in clusters.unique():
        correct += int(torch.bincount(labels[clusters == c]).max())
    return correct / len(labels)

"""Mixture-prior diagnostics (GMVAE, LIDGMVAE) against brute-force sums over every mixture component.

Every reference here is computed from the model's parameters by hand: the mixture density as an explicit
loop over components, Gaussian log densities from their formula, Bernoulli log-likelihoods from the logits,
the KL by Gauss-Hermite quadrature, and the marginal likelihood of a linear-Gaussian decoder in closed form.
"""

import math

import numpy as np
import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn

from pyro_lid.diagnostics import collapse_report, importance_weighted_log_likelihood, kl_divergence
from pyro_lid.models import GMVAE, LIDGMVAE, cluster_accuracy

F64 = torch.float64
DATA_DIM, LATENT_DIM, NUM_COMPONENTS = 6, 2, 3
# well separated components of unequal weights and shapes: no single component stands in for the mixture
LOCS = torch.tensor([[-3.0, 0.0], [0.5, 3.0], [3.0, -2.0]], dtype=F64)
SCALES = torch.tensor([[0.6, 1.2], [1.0, 0.5], [0.8, 0.9]], dtype=F64)
WEIGHTS = torch.tensor([0.5, 0.2, 0.3], dtype=F64)
LOG_2PI = math.log(2 * math.pi)

VARIANTS = {
    "gmvae": (GMVAE, {"hidden_dims": (16,)}),
    "lidgmvae": (LIDGMVAE, {"hidden_dims": (16,), "icnn_hidden_dims": (8,)}),
    "gmvae-enumerated": (GMVAE, {"hidden_dims": (16,), "enumerate_clusters": True}),
}


def inverse_softplus(y):
    return torch.log(torch.expm1(y))


def set_prior(model):
    """Give the mixture prior the parameters LOCS, SCALES, WEIGHTS."""
    with torch.no_grad():
        model.prior.locs.copy_(LOCS)
        # the prior's scales are softplus(raw) / softplus(0) + 1e-4, softplus(0) = log 2
        model.prior.scale_raw.copy_(inverse_softplus((SCALES - 1e-4) * math.log(2)))
        model.prior.weight_logits.copy_(WEIGHTS.log() + 0.7)  # a common shift: the weights stay WEIGHTS
    torch.testing.assert_close(model.prior.scales, SCALES, rtol=0, atol=1e-12)


def make_model(variant, **kwargs):
    cls, options = VARIANTS[variant]
    model = cls(DATA_DIM, LATENT_DIM, num_components=NUM_COMPONENTS, **options, **kwargs).double()
    set_prior(model)
    with torch.no_grad():  # spread the posterior means over the components
        model.encoder.loc.weight.mul_(6.0)
    return model


def binary_data(n, seed=0):
    return torch.bernoulli(torch.full((n, DATA_DIM), 0.4, dtype=F64), generator=torch.Generator().manual_seed(seed))


def diagonal_gaussian_log_density(z, loc, scale):
    """log N(z; loc, diag(scale^2)) from the formula, summed over the last dimension."""
    return (-0.5 * ((z - loc) / scale) ** 2 - scale.log() - 0.5 * LOG_2PI).sum(-1)


def mixture_log_density(z):
    """log sum_c pi_c N(z; mu_c, diag sigma_c^2), an explicit loop over the components."""
    terms = [WEIGHTS[c].log() + diagonal_gaussian_log_density(z, LOCS[c], SCALES[c]) for c in range(NUM_COMPONENTS)]
    return torch.logsumexp(torch.stack(terms), 0)


def bernoulli_log_likelihood(model, x, z):
    """log p(x | z) for binary x: sum_d x_d * eta_d - log(1 + exp(eta_d)), eta the decoder's logits."""
    decoder = model.decoder
    logits = decoder.net(z) if hasattr(decoder, "net") else decoder.injective_map(z)
    return (x * logits - nn.functional.softplus(logits)).sum(-1)


def posterior_components(q):
    """q(z | x) as mixture weights (B, J), locs (B, J, K) and scales (B, J, K); J = 1 for a diagonal Gaussian."""
    if isinstance(q, dist.MixtureSameFamily):
        normal = q.component_distribution.base_dist
        return q.mixture_distribution.probs, normal.loc, normal.scale
    normal = q.base_dist
    return torch.ones_like(normal.loc[:, :1]), normal.loc.unsqueeze(1), normal.scale.unsqueeze(1)


def posterior_log_density(q, z):
    """log q(z | x) from the formula, for z of shape (..., B, K)."""
    weights, locs, scales = posterior_components(q)
    parts = weights.log() + diagonal_gaussian_log_density(z.unsqueeze(-2), locs, scales)  # (..., B, J)
    return parts.logsumexp(-1)


def quadrature_kl(q, num_nodes):
    """Per data point, E_q[log q(z|x) - log p(z)] and Var_q of the same, by tensor Gauss-Hermite quadrature."""
    nodes, node_weights = (torch.as_tensor(a, dtype=F64) for a in np.polynomial.hermite.hermgauss(num_nodes))
    grid = torch.stack(torch.meshgrid(nodes, nodes, indexing="ij"), -1).reshape(-1, 2)  # (n^2, 2)
    grid_weights = (node_weights[:, None] * node_weights[None, :]).reshape(-1) / math.pi
    weights, locs, scales = posterior_components(q)
    first = second = 0.0
    for j in range(locs.shape[1]):
        z = locs[:, j] + math.sqrt(2) * scales[:, j] * grid[:, None, :]  # (n^2, B, K)
        f = posterior_log_density(q, z) - mixture_log_density(z)
        first = first + weights[:, j] * (grid_weights[:, None] * f).sum(0)
        second = second + weights[:, j] * (grid_weights[:, None] * f**2).sum(0)
    return first, second - first**2


# ------------------------------------------------------------------ log p(x, z)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_log_joint_sums_every_mixture_component(variant):
    model = make_model(variant)
    x = binary_data(8)
    z = 2.5 * torch.randn(5, 8, LATENT_DIM, dtype=F64)  # (samples, batch, K), near every component
    expected = mixture_log_density(z) + bernoulli_log_likelihood(model, x, z)
    log_joint = model.log_joint(x, z)
    assert log_joint.shape == (5, 8) and log_joint.dtype == F64
    torch.testing.assert_close(log_joint, expected, rtol=0, atol=1e-8)
    # the reference does depend on the mixture: component 0 alone is far off for some z
    alone = diagonal_gaussian_log_density(z, LOCS[0], SCALES[0]) + bernoulli_log_likelihood(model, x, z)
    assert (alone - expected).abs().max() > 1.0


# ------------------------------------------------------------------ KL(q(z|x) || p(z))
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_kl_divergence_matches_quadrature_with_the_whole_mixture(variant):
    model = make_model(variant)
    x = binary_data(8)
    with torch.no_grad():
        q = model.posterior(x)
        expected, variance = quadrature_kl(q, 150)
        coarse, _ = quadrature_kl(q, 100)
    torch.testing.assert_close(coarse, expected, rtol=0, atol=1e-4)  # converged, far below the Monte Carlo error
    num_samples = 4000
    kl = kl_divergence(model, x, num_samples=num_samples, batch_size=3)
    # the library's estimate is a mean of num_samples draws for each of N points: its standard deviation
    mc_std = float(variance.sum().sqrt()) / math.sqrt(num_samples) / x.shape[0]
    assert 0 < mc_std < 0.02
    assert abs(kl["total"] - float(expected.mean())) < 5 * mc_std
    assert kl["per_dim"] is None  # a mixture prior does not factorize over dimensions


# ------------------------------------------------------------------ importance-weighted log-likelihood
def record_posterior_draws(model, monkeypatch):
    """Make model.posterior record (x, q, [draws...]) for every call, so a test can reuse the very same draws."""
    calls, original = [], model.posterior

    def posterior(x):
        q = original(x)
        draws, sample = [], q.sample

        def recording_sample(sample_shape=()):
            z = sample(sample_shape)
            draws.append(z)
            return z

        q.sample = recording_sample
        calls.append((x, q, draws))
        return q

    monkeypatch.setattr(model, "posterior", posterior)
    return calls


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_importance_weighted_log_likelihood_is_the_brute_force_sum_over_the_same_draws(variant, monkeypatch):
    model = make_model(variant)
    x = binary_data(8)
    calls = record_posterior_draws(model, monkeypatch)
    num_samples = 30
    ll = importance_weighted_log_likelihood(model, x, num_samples=num_samples, chunk_size=7, batch_size=5)
    assert ll.shape == (8,) and ll.dtype == F64
    assert [c[0].shape[0] for c in calls] == [5, 3]  # two mini-batches
    expected = []
    for xb, q, draws in calls:
        z = torch.cat(draws)  # (num_samples, b, K)
        assert z.shape == (num_samples, xb.shape[0], LATENT_DIM)
        log_w = mixture_log_density(z) + bernoulli_log_likelihood(model, xb, z) - posterior_log_density(q, z)
        expected.append(torch.logsumexp(log_w, 0) - math.log(num_samples))
    torch.testing.assert_close(ll, torch.cat(expected), rtol=0, atol=1e-8)


class LinearGaussianDecoder(nn.Module):
    """p(x | z) = N(W z + b, sigma^2 I): with a Gaussian-mixture prior, p(x) is a Gaussian mixture in closed form."""

    def __init__(self, weight, bias, sigma):
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.sigma = sigma

    def forward(self, z):
        return dist.Normal(z @ self.weight.T + self.bias, self.sigma).to_event(1)

    def log_marginal(self, x):
        """log p(x) = log sum_c pi_c N(x; W mu_c + b, W diag(sigma_c^2) W^T + sigma^2 I)."""
        eye = torch.eye(x.shape[-1], dtype=F64)
        terms = []
        for c in range(NUM_COMPONENTS):
            cov = self.weight @ torch.diag(SCALES[c] ** 2) @ self.weight.T + self.sigma**2 * eye
            mean = self.weight @ LOCS[c] + self.bias
            terms.append(WEIGHTS[c].log() + torch.distributions.MultivariateNormal(mean, cov).log_prob(x))
        return torch.logsumexp(torch.stack(terms), 0)


def linear_gaussian_gmvae(seed=0):
    """A GMVAE with a linear-Gaussian decoder and an encoder set to a Gaussian approximation of the posterior."""
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(DATA_DIM, LATENT_DIM, generator=gen, dtype=F64)
    bias = torch.randn(DATA_DIM, generator=gen, dtype=F64)
    sigma = 0.8
    decoder = LinearGaussianDecoder(weight, bias, sigma)
    model = GMVAE(DATA_DIM, LATENT_DIM, hidden_dims=(16,), num_components=NUM_COMPONENTS, decoder=decoder).double()
    set_prior(model)
    # the posterior under the prior's moment-matched Gaussian: z | x ~ N(A (x - b) + a, Sigma)
    prior_mean = WEIGHTS @ LOCS
    centred = LOCS - prior_mean
    prior_cov = (WEIGHTS[:, None, None] * (torch.diag_embed(SCALES**2) + centred[:, :, None] * centred[:, None])).sum(0)
    precision = torch.linalg.inv(prior_cov) + weight.T @ weight / sigma**2
    cov = torch.linalg.inv(precision)
    gain = cov @ weight.T / sigma**2
    offset = cov @ torch.linalg.solve(prior_cov, prior_mean) - gain @ bias
    encoder = model.encoder
    with torch.no_grad():  # hidden units relu(x) and relu(-x): the ReLU MLP is then linear in x
        first = encoder.body[0]
        first.weight.zero_()
        first.bias.zero_()
        first.weight[:DATA_DIM] = torch.eye(DATA_DIM)
        first.weight[DATA_DIM : 2 * DATA_DIM] = -torch.eye(DATA_DIM)
        encoder.loc.weight.zero_()
        encoder.loc.weight[:, :DATA_DIM] = gain
        encoder.loc.weight[:, DATA_DIM : 2 * DATA_DIM] = -gain
        encoder.loc.bias.copy_(offset)
        encoder.scale.weight.zero_()  # a wider proposal than the Gaussian approximation
        encoder.scale.bias.copy_(inverse_softplus(1.5 * cov.diagonal().sqrt() - 1e-4))
    return model


def linear_gaussian_data(model, n, seed=1):
    """(x, y): y the true component of each point, x drawn from the model."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.multinomial(WEIGHTS, n, replacement=True, generator=gen)
    z = LOCS[y] + SCALES[y] * torch.randn(n, LATENT_DIM, generator=gen, dtype=F64)
    decoder = model.decoder
    x = z @ decoder.weight.T + decoder.bias + decoder.sigma * torch.randn(n, DATA_DIM, generator=gen, dtype=F64)
    return x, y


def test_importance_weighted_log_likelihood_matches_the_closed_form_marginal():
    model = linear_gaussian_gmvae()
    x, _ = linear_gaussian_data(model, 40)
    exact = model.decoder.log_marginal(x)
    ll = importance_weighted_log_likelihood(model, x, num_samples=10000, chunk_size=2500)
    assert ll.shape == (40,) and ll.dtype == F64
    # Monte Carlo error of 10000 weights, measured over 12 seeds: at most 0.025 a point, 0.003 on the mean
    assert (ll - exact).abs().max() < 0.1
    assert abs(float((ll - exact).mean())) < 0.01


# ------------------------------------------------------------------ collapse_report
@pytest.mark.parametrize("variant", ["linear-gaussian", "gmvae-enumerated"])
def test_collapse_report_gives_the_cluster_accuracy_of_the_models_clusters(variant):
    model = linear_gaussian_gmvae() if variant == "linear-gaussian" else make_model(variant)
    x, labels = linear_gaussian_data(linear_gaussian_gmvae(), 300)
    gen = torch.Generator().manual_seed(2)  # a quarter of the labels replaced at random: an accuracy short of 1
    labels = torch.where(torch.rand(300, generator=gen) < 0.25, torch.randint(0, 3, (300,), generator=gen), labels)
    if variant != "linear-gaussian":
        x = (x > 0).to(F64)  # binary data for the Bernoulli likelihood
        with torch.no_grad():  # q(y | x) peaked enough to pick different clusters
            model.cluster_encoder[-1].weight.mul_(20.0)
    report = collapse_report(model, x, num_samples=50, labels=labels)
    clusters = model.cluster(x)
    assert clusters.shape == (300,) and len(clusters.unique()) > 1
    assert "cluster_accuracy" in report
    assert report["cluster_accuracy"] == cluster_accuracy(clusters, labels)
    assert report["clusters_used"] == int(clusters.unique().numel()) and 1 <= report["clusters_used"] <= 3
    assert "cluster_accuracy" not in collapse_report(model, x[:20], num_samples=5)  # no labels, no accuracy


def test_collapse_report_kl_and_log_likelihood_use_the_whole_mixture():
    model = linear_gaussian_gmvae()
    x, labels = linear_gaussian_data(model, 300)
    report = collapse_report(model, x, num_samples=200, labels=labels)
    with torch.no_grad():
        expected_kl, variance = quadrature_kl(model.posterior(x), 100)
    # collapse_report's KL is the mean of 100 draws per point
    mc_std = float(variance.sum().sqrt()) / math.sqrt(100) / x.shape[0]
    assert abs(report["kl"] - float(expected_kl.mean())) < 5 * mc_std
    # 200 weights a point: error of the mean measured at most 0.009 over 10 seeds
    assert abs(report["ll"] - float(model.decoder.log_marginal(x).mean())) < 0.04
    # the data come from the model's own mixture, and the encoder's means recover their components
    assert report["cluster_accuracy"] > 0.95


# ------------------------------------------------------------------ initializing the mixture on the data's clusters
def test_kmeans_recovers_well_separated_clusters_and_refuses_bad_input():
    from pyro_lid.models import kmeans

    gen = torch.Generator().manual_seed(0)
    truth = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]], dtype=F64)
    labels = torch.arange(4).repeat_interleave(50)
    points = truth[labels] + 0.5 * torch.randn(200, 2, generator=gen, dtype=F64)
    centres, assignment = kmeans(points, 4, generator=torch.Generator().manual_seed(1))
    # each found cluster is exactly one true cluster, and its centre is that cluster's mean
    for c in range(4):
        members = labels[assignment == c]
        assert members.numel() == 50 and (members == members[0]).all()
        assert torch.allclose(centres[c], points[assignment == c].mean(0))
    with pytest.raises(ValueError, match="k must be an integer in"):
        kmeans(points, 0)
    with pytest.raises(ValueError, match="finite"):
        kmeans(torch.full((3, 2), float("nan")), 2)


def test_mixture_initialized_from_points_puts_one_component_on_each_cluster():
    model = make_model("gmvae")
    gen = torch.Generator().manual_seed(0)
    truth = torch.tensor([[-6.0, 0.0], [6.0, 0.0], [0.0, 6.0]], dtype=F64)
    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    points = truth[labels] + torch.tensor([0.5, 1.5], dtype=F64) * torch.randn(100, 2, generator=gen, dtype=F64)
    assignment = model.prior.initialize_from(points, generator=torch.Generator().manual_seed(3))
    prior = model.prior
    # every component sits on one cluster: its mean, its per-dimension spread, its share of the points
    for c in range(3):
        members = points[assignment == c]
        assert torch.allclose(prior.locs[c], members.mean(0), atol=1e-10)
        assert torch.allclose(prior.scales[c], members.std(0), rtol=1e-6)
    shares = sorted(prior.mixing().probs.tolist())
    assert shares == pytest.approx([0.1, 0.3, 0.6])
    # and the prior's own clustering of the points is the true one
    found = prior.cluster_log_posterior(points).argmax(-1)
    assert cluster_accuracy(found, labels) == 1.0
    with pytest.raises(ValueError, match=r"points must have shape \(N, 2\)"):
        prior.initialize_from(points[:, :1])

import pytest
import torch

from pyro_lid.nn import ICNN, PICNN

from .helpers import perturb_


def make(kind, n, c=3, **options):
    net = ICNN(n, [16, 12, 8], **options) if kind == "icnn" else PICNN(n, c, [16, 12, 8], [10], **options)
    return perturb_(net.double(), 0.7)


#: the activation's sharpness and the output weights' gain (ICNN options): the closed forms hold for every value
SHAPES = [{}, {"sharpness": 0.3, "output_gain": 3.0}, {"sharpness": 4.0, "output_gain": 0.5}]


def context_for(kind, batch, c=3):
    return None if kind == "icnn" else torch.randn(batch, c, dtype=torch.float64)


@pytest.mark.parametrize("options", SHAPES)
@pytest.mark.parametrize("kind", ["icnn", "picnn"])
@pytest.mark.parametrize("n", [1, 2, 7])
def test_closed_form_gradient_matches_autograd(kind, n, options):
    net = make(kind, n, **options)
    ctx = context_for(kind, 9)
    x = 2 * torch.randn(9, n, dtype=torch.float64, requires_grad=True)
    expected = torch.autograd.grad(net(x, ctx).sum(), x)[0]
    assert torch.allclose(net.gradient(x, ctx), expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("options", SHAPES)
@pytest.mark.parametrize("kind", ["icnn", "picnn"])
def test_hessian_and_hvp_match_autograd(kind, options):
    n = 5
    net = make(kind, n, **options)
    ctx = context_for(kind, 6)
    x = 2 * torch.randn(6, n, dtype=torch.float64)
    expected = torch.stack(
        [
            torch.autograd.functional.jacobian(
                lambda xi, i=i: net.gradient(xi[None], None if ctx is None else ctx[i : i + 1])[0], x[i]
            )
            for i in range(6)
        ]
    )
    hess = net.hessian(x, ctx)
    assert torch.allclose(hess, expected, atol=1e-12, rtol=0)
    v = torch.randn(6, n, dtype=torch.float64)
    assert torch.allclose(net.hvp(x, v, ctx), (expected @ v.unsqueeze(-1)).squeeze(-1), atol=1e-12, rtol=0)


@pytest.mark.parametrize("kind", ["icnn", "picnn"])
def test_hessian_is_spd_with_eigenvalues_above_alpha_floor(kind):
    net = ICNN(4, [32, 32], alpha_floor=0.05) if kind == "icnn" else PICNN(4, 2, [32, 32], alpha_floor=0.05)
    net = net.double()
    with torch.no_grad():
        net.alpha_raw.fill_(-30.0)  # alpha sits on its floor
    perturb_(net, 1.0)
    with torch.no_grad():
        net.alpha_raw.fill_(-30.0)
    ctx = context_for(kind, 200, 2)
    hess = net.hessian(5 * torch.randn(200, 4, dtype=torch.float64), ctx)
    assert torch.allclose(hess, hess.transpose(-1, -2), atol=1e-14)
    eig = torch.linalg.eigvalsh(hess)
    assert (eig.min(-1).values >= net.alpha_floor * (1 - 1e-9)).all()
    # and the network term really curves the potential (the test is not vacuous)
    assert eig.max() > 2 * net.alpha_floor


@pytest.mark.parametrize("options", SHAPES)
def test_potential_is_convex_along_random_segments(options):
    net = make("icnn", 3, **options)
    a, b = 3 * torch.randn(2, 500, 3, dtype=torch.float64)
    t = torch.rand(500, 1, dtype=torch.float64)
    lhs = net(t * a + (1 - t) * b)
    rhs = t[:, 0] * net(a) + (1 - t[:, 0]) * net(b)
    assert (lhs <= rhs + 1e-12).all()


@pytest.mark.parametrize("n, hidden", [(2, [64, 64]), (64, [64, 64]), (64, [512, 512])])
def test_initialization_is_close_to_identity(n, hidden):
    """grad psi(0) = 0 exactly, and the Jacobian starts between alpha I and about 2 alpha I."""
    net = ICNN(n, hidden)
    x = torch.randn(128, n)
    with torch.no_grad():
        assert net.gradient(torch.zeros(1, n)).abs().max() < 1e-6
        eig = torch.linalg.eigvalsh(net.hessian(x[:16]))
        rel = (net.gradient(x) - x).norm(dim=-1) / x.norm(dim=-1)
    assert eig.min() >= 1.0 - 1e-5 and eig.max() < 2.5
    assert rel.mean() < 0.5
    assert abs(net.alpha.item() - 1.0) < 1e-6


@pytest.mark.parametrize("kind", ["icnn", "picnn"])
def test_derivatives_work_under_no_grad(kind):
    net = make(kind, 3)
    ctx = context_for(kind, 4)
    x = torch.randn(4, 3, dtype=torch.float64)
    with torch.no_grad():
        g, h, hv = net.gradient(x, ctx), net.hessian(x, ctx), net.hvp(x, x, ctx)
    assert not g.requires_grad and g.shape == (4, 3) and h.shape == (4, 3, 3) and hv.shape == (4, 3)
    assert torch.allclose(g, net.gradient(x, ctx).detach())


def test_sharpness_and_output_gain_define_the_potential():
    """One layer written out by hand: psi(x) = gain * softplus(v~) . softplus(beta a) / beta + w.x + alpha/2 |x|^2,
    a = W x + b; and the gain scales the network term of the map exactly (same parameters, gain 1 against 3)."""
    beta, gain = 2.5, 3.0
    net = perturb_(ICNN(3, [6], sharpness=beta, output_gain=gain).double(), 0.7)
    x = torch.randn(7, 3, dtype=torch.float64)
    a = x @ net.input_weights[0].T + net.biases[0]
    v = gain * min(1.0, 3 / 6) * torch.nn.functional.softplus(net.output_weight_raw)
    expected = torch.nn.functional.softplus(beta * a) / beta @ v + x @ net.linear + 0.5 * net.alpha * (x * x).sum(-1)
    assert torch.allclose(net(x), expected, atol=1e-12, rtol=0)
    plain = ICNN(3, [6], sharpness=beta).double()
    plain.load_state_dict(net.state_dict())
    network_term = lambda m: m.gradient(x) - m.linear - m.alpha * x  # noqa: E731
    assert torch.allclose(network_term(net), gain * network_term(plain), atol=1e-12, rtol=0)


@pytest.mark.parametrize("option", ["sharpness", "output_gain"])
@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf"), True, "2"])
def test_bad_sharpness_and_output_gain_are_rejected(option, value):
    with pytest.raises(ValueError, match=f"{option} must be a finite number > 0"):
        ICNN(2, **{option: value})
    with pytest.raises(ValueError, match=option):
        PICNN(2, 1, **{option: value})


def test_parameters_get_gradients_through_closed_form_map():
    net = ICNN(3, [8])
    net.gradient(torch.randn(5, 3)).pow(2).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.parametrize("floor", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_alpha_floor_is_rejected(floor):
    with pytest.raises(ValueError, match="alpha_floor"):
        ICNN(2, alpha_floor=floor)


def test_bad_construction_and_inputs_are_rejected():
    with pytest.raises(ValueError, match="alpha_init"):
        ICNN(2, alpha_floor=1.0, alpha_init=0.5)
    with pytest.raises(ValueError, match="input_dim"):
        ICNN(0)
    with pytest.raises(ValueError, match="hidden_dims"):
        ICNN(2, hidden_dims=[])
    net = ICNN(3)
    with pytest.raises(ValueError, match=r"\(batch, 3\)"):
        net.gradient(torch.randn(4, 2))
    with pytest.raises(ValueError, match="no context"):
        net.gradient(torch.randn(4, 3), torch.randn(4, 1))
    pnet = PICNN(3, 2)
    with pytest.raises(ValueError, match="needs a context"):
        pnet.gradient(torch.randn(4, 3))
    with pytest.raises(ValueError, match="context of shape"):
        pnet.gradient(torch.randn(4, 3), torch.randn(4, 5))


def test_picnn_starts_as_its_unconditioned_icnn_for_every_context_and_learns_to_use_the_context():
    # the promise: at initialization every gain is one and every context term vanishes, so psi(.; c) is the ICNN
    # with the same convex-path parameters, for every c (and grad psi(0; c) = 0)
    torch.manual_seed(0)
    net = PICNN(3, 2, [16, 12], [10]).double()
    icnn = ICNN(3, [16, 12]).double()
    icnn.load_state_dict({k: v for k, v in net.state_dict().items() if k in icnn.state_dict()})
    x = 2 * torch.randn(6, 3, dtype=torch.float64)
    for scale in (0.0, 1.0, 100.0):
        ctx = scale * torch.randn(6, 2, dtype=torch.float64)
        with torch.no_grad():
            assert torch.allclose(net(x, ctx), icnn(x), atol=1e-12, rtol=0)
            assert torch.allclose(net.gradient(x, ctx), icnn.gradient(x), atol=1e-12, rtol=0)
            assert torch.allclose(net.hessian(x, ctx), icnn.hessian(x), atol=1e-12, rtol=0)
            origin = torch.zeros(6, 3, dtype=torch.float64)
            assert torch.allclose(net.gradient(origin, ctx), icnn.gradient(origin), atol=1e-12, rtol=0)
            assert net.gradient(origin, ctx).abs().max() < 1e-6  # centred in float32, at construction
    # zero head weights still learn: their gradient is (d loss / d head output) h(c), and h(c) != 0
    ctx = torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=torch.float64).repeat_interleave(3, 0)
    target = x + ctx[:, :1]  # the map must shift by +-1 depending on the context
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for step in range(30):
        optimizer.zero_grad()
        (net.gradient(x, ctx) - target).pow(2).sum().backward()
        if step == 0:
            assert net.context_head.weight.grad.abs().max() > 1e-3
        optimizer.step()
    with torch.no_grad():
        assert (net.gradient(x[:1], ctx[:1]) - net.gradient(x[:1], ctx[3:4])).abs().max() > 0.1


def test_picnn_depends_on_context_once_perturbed():
    net = PICNN(2, 3)
    x = torch.randn(5, 2)
    perturb_(net, 0.5)
    with torch.no_grad():
        g1, g2 = net.gradient(x, torch.zeros(5, 3)), net.gradient(x, torch.ones(5, 3))
    assert (g1 - g2).abs().max() > 1e-3

"""The same properties on a GPU: transforms agree with the CPU, every method trains there, resume is exact.

Skipped, with the reason, on machines without CUDA (CI has none).
"""

import pyro
import pytest
import torch

from pyro_lid.data import synthetic_latent_data
from pyro_lid.diagnostics import collapse_report
from pyro_lid.distributions.transforms import injective_brenier
from pyro_lid.experiments.methods import METHODS
from pyro_lid.infer import fit
from pyro_lid.models import VAE

from .helpers import assert_resume_is_exact, perturb_
from .test_brenier import curved_brenier

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
CUDA = torch.device("cuda")


@pytest.mark.parametrize("n", [5, 64])
def test_brenier_on_the_gpu_inverts_and_matches_the_cpu_in_float64(n):
    cpu = curved_brenier(n)
    gpu = curved_brenier(n).to(CUDA)
    gpu.load_state_dict(cpu.state_dict())
    x = 2 * torch.randn(30, n, dtype=torch.float64)
    y_cpu, y_gpu = cpu(x), gpu(x.to(CUDA))
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(
        gpu.log_abs_det_jacobian(x.to(CUDA), y_gpu).cpu(), cpu.log_abs_det_jacobian(x, y_cpu), rtol=1e-9, atol=1e-9
    )
    y = 3 * torch.randn(30, n, dtype=torch.float64, device=CUDA)
    assert (gpu(gpu.inv(y).clone()) - y).abs().max() < 1e-6
    # parameter gradients through the inverse agree with the CPU's
    loss_cpu = cpu.inv(y.cpu().clone()).square().sum()
    loss_gpu = gpu.inv(y.clone()).square().sum()
    grads_cpu = torch.autograd.grad(loss_cpu, list(cpu.parameters()))
    grads_gpu = torch.autograd.grad(loss_gpu, list(gpu.parameters()))
    for a, b in zip(grads_cpu, grads_gpu):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-6, atol=1e-8)


def test_injective_decoder_left_inverse_on_the_gpu():
    t = perturb_(injective_brenier(4, 30, latent_hidden_dims=[16], output_hidden_dims=[16]).double(), 0.3).to(CUDA)
    z = torch.randn(20, 4, dtype=torch.float64, device=CUDA)
    assert (t.left_inverse(t(z).detach().clone()) - z).abs().max() < 1e-6
    assert t.smallest_singular_value(z).min() >= t.injectivity_bound() * (1 - 1e-9)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_and_is_diagnosed_on_the_gpu(name):
    x, _ = synthetic_latent_data(400, 3, 20, generator=torch.Generator().manual_seed(0))
    method = METHODS[name]
    pyro.set_rng_seed(0)
    model = method.build(20, 3, hidden=32, icnn_hidden=16, num_components=3)
    history = fit(model, x[:300], x[300:], epochs=2, batch_size=50, device="cuda", progress=False,
                  **method.fit_options(2))  # fmt: skip
    assert all(p.device.type == "cuda" for p in model.parameters())
    assert all(torch.isfinite(torch.tensor(history["val_loss"])))
    report = collapse_report(model, x[300:].to(CUDA), num_samples=10)
    assert torch.isfinite(torch.tensor([report["ll"], report["kl"], report["mi"]])).all()


def test_resume_on_the_gpu_equals_an_uninterrupted_run(tmp_path):
    x, _ = synthetic_latent_data(300, 3, 20, generator=torch.Generator().manual_seed(0))
    pyro.set_rng_seed(0)
    assert_resume_is_exact(
        lambda: VAE(20, 3, hidden_dims=(32,)), x[:200], x[200:], tmp_path / "gpu.pt", epochs=3,
        interrupt={"early_stopping_patience": 0}, batch_size=50, device="cuda",
    )  # fmt: skip


@pytest.mark.parametrize("case", ["vae-standard", "lidvae-standard", "vae-lagging"])
def test_fit_on_the_gpu_matches_the_cpu_in_float64(case):
    """Fixed per-point noise (as in the distributed test) makes the two runs see the same draws, so the
    trained parameters agree up to floating-point summation order."""
    from .test_distributed import train

    cpu_model, cpu_history = train(case)
    gpu_model, gpu_history = train(case, device="cuda")
    assert next(gpu_model.parameters()).device.type == "cuda"
    for key, value in cpu_model.state_dict().items():
        torch.testing.assert_close(gpu_model.state_dict()[key].cpu(), value, rtol=1e-7, atol=1e-9, msg=key)
    assert gpu_history["train_loss"] == pytest.approx(cpu_history["train_loss"], rel=1e-9)


def test_training_throughput_on_the_gpu_is_reported():
    """Not a timing assertion: prints images per second of one epoch on the GPU beside the CPU's."""
    import time

    x, _ = synthetic_latent_data(4000, 8, 784, "bernoulli", 1.0, generator=torch.Generator().manual_seed(0))
    rates = {}
    for device in ("cpu", "cuda"):
        model = VAE(784, 32, hidden_dims=(512, 512))
        fit(model, x[:500], epochs=1, device=device, progress=False)  # warm-up
        started = time.perf_counter()
        fit(model, x, epochs=1, device=device, progress=False)
        rates[device] = x.shape[0] / (time.perf_counter() - started)
    print(f"VAE training throughput: cpu {rates['cpu']:.0f} images/s, cuda {rates['cuda']:.0f} images/s")
    assert all(rate > 0 for rate in rates.values())

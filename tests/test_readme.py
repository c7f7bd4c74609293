"""README's set-up commands are the ones CI runs, and its code example runs."""

import math
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_bash_blocks():
    return re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)


def test_ci_runs_exactly_the_readme_commands():
    ci_commands = re.findall(r"^run '(.*)'$", (ROOT / ".ci" / "run").read_text(), flags=re.M)
    assert ci_commands == readme_bash_blocks()
    assert len(ci_commands) == 2


def readme_python_blocks():
    return re.findall(r"```python\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_python_example_runs():
    example = readme_python_blocks()[0]
    namespace = {}
    exec(compile(example, "README.md", "exec"), namespace)
    import pyro
    import torch

    transform, flow, decoder, model = (namespace[k] for k in ("transform", "flow", "decoder", "model"))
    # the flow scores any data: log q(y) = log N(x; 0, I) - log|det dy/dx| at x = transform^-1(y), by Newton
    y = 2 * torch.randn(10, 2)
    log_prob = flow.log_prob(y)
    assert log_prob.shape == (10,) and torch.isfinite(log_prob).all()
    x = transform.inv(y.clone()).detach()
    assert torch.allclose(transform(x.clone()), y, atol=1e-4)
    log_det = torch.stack([torch.linalg.slogdet(torch.autograd.functional.jacobian(transform, xi))[1] for xi in x])
    expected = (-0.5 * x**2 - 0.5 * math.log(2 * math.pi)).sum(-1) - log_det
    assert torch.allclose(log_prob, expected, atol=1e-4)
    # the decoder maps R^4 into R^784, injectively: its left inverse recovers z
    z = torch.randn(5, 4)
    logits = decoder(z)
    assert logits.shape == (5, 784)
    assert torch.allclose(decoder.left_inverse(logits.detach().clone()), z, atol=1e-3)
    # the model: z latent in the data plate, x observed Bernoulli, the decoder's parameters registered
    data = torch.bernoulli(torch.full((3, 784), 0.5))
    trace = pyro.poutine.trace(model).get_trace(data)
    assert trace.nodes["z"]["value"].shape == (3, 4) and not trace.nodes["z"]["is_observed"]
    site = trace.nodes["x"]
    assert site["is_observed"] and site["value"] is data
    assert site["fn"].batch_shape == (3,) and site["fn"].event_shape == (784,)
    assert [frame.name for frame in site["cond_indep_stack"]] == ["data"]
    assert torch.isfinite(trace.log_prob_sum())
    params = {name for name, node in trace.nodes.items() if node["type"] == "param"}
    assert params == {f"decoder$$${name}" for name, _ in decoder.named_parameters()}


def test_readme_training_example_runs_and_resumes(tmp_path, monkeypatch, capsys):
    import torch

    example = readme_python_blocks()[1]
    monkeypatch.chdir(tmp_path)  # it checkpoints to runs/readme.pt
    namespace = {}
    exec(compile(example, "README.md", "exec"), namespace)
    report, history = namespace["report"], namespace["history"]
    assert len(history) == 3 and (tmp_path / "runs" / "readme.pt").stat().st_size > 0
    assert report["num_data"] == 100 and report["num_samples"] == 50 and 0 <= report["au"] <= 4
    assert report["mi_per_dim"].shape == (4,) and torch.isfinite(torch.tensor(report["ll"]))
    assert "active units" in capsys.readouterr().out
    exec(compile(example, "README.md", "exec"), namespace)  # again: resumes, trains nothing more
    saved = torch.load(tmp_path / "runs" / "readme.pt", weights_only=False)["model"]
    assert len(namespace["history"]) == 3
    assert all(torch.equal(value, saved[key]) for key, value in namespace["model"].state_dict().items())

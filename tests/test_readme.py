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


def test_readme_python_example_runs():
    (example,) = re.findall(r"```python\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)
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

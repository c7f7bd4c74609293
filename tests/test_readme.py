"""README's set-up commands are the ones CI runs, and its code example runs."""

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
    import torch

    x = torch.bernoulli(torch.full((3, 784), 0.5))
    namespace["model"](x)  # the model runs and scores data

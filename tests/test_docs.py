"""The tutorial's code runs and shows what the tutorial says it shows."""

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_lidvae_tutorial_runs_and_its_claims_hold():
    text = (DOCS / "lidvae.rst").read_text()
    (code,) = [block for block in re.findall(r"\.\. code-block:: python\n\n(.*?)(?:\n\S|\Z)", text, flags=re.S)]
    namespace = {}
    exec(compile("\n".join(line[4:] for line in code.splitlines()), "lidvae.rst", "exec"), namespace)
    reports = namespace["reports"]
    assert reports["VAE"]["au"] < 4
    assert reports["LIDVAE"]["au"] == 4

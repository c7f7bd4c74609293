"""What ``fit`` does to a model, observed from inside the model: a safety net for any rewrite of the loop.

Each test watches a behaviour through the model itself (the KL weight and the data that reach
``model.model``, the parameters between calls, the objective's value), not through the loop's
internals, so that a reimplementation (e.g. on Lightning) is judged by what training does.
"""

import functools
import random

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

import pyro_lid.experiments.image_comparison as harness
from pyro_lid.cli import main
from pyro_lid.infer import FreeBitsELBO, KLSchedule, fit
from pyro_lid.models import VAE

SMALL = {"hidden_dims": (16,)}


class WatchedVAE(VAE):
    """A VAE that records, for every call of ``model`` in training mode, what that call saw:
    the data ``x``, the effective scale of the latent site ``z`` (all handlers applied, mini-batch
    scaling included), the batch size, ``num_data``, and a copy of every parameter."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def model(self, x, num_data=None):
        if not self.training:  # validation and diagnostics run in eval mode
            return super().model(x, num_data)
        trace = poutine.trace(functools.partial(VAE.model, self)).get_trace(x, num_data)
        self.calls.append(
            {
                "x": x.detach().clone(),
                "z_scale": float(trace.nodes["z"]["scale"]),
                "batch": x.shape[0],
                "num_data": num_data,
                "params": {k: v.detach().clone() for k, v in self.named_parameters()},
            }
        )


def intensities(n=120, d=12, seed=3):
    return 0.1 + 0.8 * torch.rand(n, d, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ 1. the KL schedule is in effect
@pytest.mark.parametrize(
    "schedule",
    [KLSchedule("linear", warmup_epochs=10), KLSchedule("cyclical", cycle_epochs=2, ramp_fraction=0.5)],
    ids=["linear", "cyclical"],
)
def test_every_training_step_uses_the_scheduled_kl_weight(schedule):
    n, batch_size, epochs, beta = 120, 40, 3, 0.5
    model = WatchedVAE(12, 2, beta=beta, **SMALL)
    x = torch.bernoulli(intensities(n))
    history = fit(model, x, epochs=epochs, batch_size=batch_size, kl_schedule=schedule, progress=False)
    steps = n // batch_size
    expected = [beta * schedule(epoch + step / steps) for epoch in range(epochs) for step in range(steps)]
    assert len(model.calls) == len(expected)
    # the latent site's scale is beta * w(t) times the mini-batch factor num_data / batch
    in_effect = [c["z_scale"] * c["batch"] / c["num_data"] for c in model.calls]
    assert in_effect == pytest.approx(expected, abs=1e-5)
    assert min(in_effect) < 0.5 * beta  # not vacuous: the schedule is far from 1 somewhere
    assert history["kl_weight"] == pytest.approx([schedule(e + 1) for e in range(epochs)])
    assert model.latent_scale == beta  # after training the model is back at the full objective


# ------------------------------------------------------------------ 2. free_bits is the objective trained
def test_free_bits_trains_the_floored_objective(monkeypatch):
    x = torch.bernoulli(intensities(120))
    floor, latent_dim = 50.0, 2
    used = []
    original = FreeBitsELBO.differentiable_loss

    def spy(self, model, guide, *args, **kwargs):
        used.append(self.free_bits)
        return original(self, model, guide, *args, **kwargs)

    monkeypatch.setattr(FreeBitsELBO, "differentiable_loss", spy)
    init = {k: v.clone() for k, v in VAE(12, latent_dim, **SMALL).state_dict().items()}
    finals, histories = {}, {}
    for name, options in (
        ("free_bits", {"free_bits": floor}),
        ("explicit_loss", {"loss": FreeBitsELBO(floor)}),
        ("plain", {}),
    ):
        model = VAE(12, latent_dim, **SMALL)
        model.load_state_dict(init)
        used.clear()
        histories[name] = fit(model, x, epochs=2, batch_size=40, progress=False, **options)
        finals[name] = model.state_dict()
        if name == "free_bits":
            assert used and set(used) == {floor}  # every evaluation of the objective is the floored one
    # the floor is part of the loss: at least latent_dim * floor nats per data point
    assert min(histories["free_bits"]["train_loss"]) > latent_dim * floor
    assert max(histories["plain"]["train_loss"]) < latent_dim * floor
    # free_bits=lambda trains exactly as loss=FreeBitsELBO(lambda), and not as the plain ELBO
    for key, value in finals["free_bits"].items():
        assert torch.equal(value, finals["explicit_loss"][key]), key
    assert any(not torch.equal(v, finals["plain"][k]) for k, v in finals["free_bits"].items())


# ------------------------------------------------------------------ 3. resume restores the random streams
def test_resume_restores_the_random_state_even_after_the_generators_moved_on(tmp_path):
    train, val = intensities(160)[:120], torch.bernoulli(intensities(40, seed=4))
    init = {k: v.clone() for k, v in VAE(12, 2, **SMALL).state_dict().items()}
    options = dict(batch_size=40, dynamic_binarization=True, seed=5, progress=False)

    straight = VAE(12, 2, **SMALL)
    straight.load_state_dict(init)
    fit(straight, train, val, epochs=3, **options)

    resumed = VAE(12, 2, **SMALL)
    resumed.load_state_dict(init)
    checkpoint = tmp_path / "run.pt"
    fit(resumed, train, val, epochs=1, checkpoint=checkpoint, **options)
    # what happens between the interruption and the resumption: a new process, other work
    torch.manual_seed(12345)
    torch.rand(1000)
    random.seed(12345)
    np.random.seed(12345)
    fit(resumed, train, val, epochs=3, checkpoint=checkpoint, resume=True, **options)
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


# ------------------------------------------------------------------ 4. the Lagging inner loop trains the encoder
def test_aggressive_phase_steps_the_encoder_alone_before_each_decoder_step():
    model = WatchedVAE(12, 2, **SMALL)
    train, val = torch.bernoulli(intensities(100)), torch.bernoulli(intensities(40, seed=4))
    history = fit(model, train, val, epochs=1, batch_size=50, strategy="lagging", progress=False)
    assert history["aggressive"] == [True]  # the first epoch is aggressive
    encoder = {k for k, _ in model.named_parameters() if k.startswith("encoder.")}
    decoder = {k for k, _ in model.named_parameters() if k.startswith("decoder.")}
    assert encoder and decoder
    snapshots = [c["params"] for c in model.calls] + [{k: v.detach().clone() for k, v in model.named_parameters()}]
    moves = []  # between one training call of the model and the next: which part moved
    for before, after in zip(snapshots, snapshots[1:]):
        encoder_moved = any(not torch.equal(before[k], after[k]) for k in encoder)
        decoder_moved = any(not torch.equal(before[k], after[k]) for k in decoder)
        assert encoder_moved != decoder_moved, "each step must move the encoder alone or the decoder alone"
        moves.append("E" if encoder_moved else "D")
    pattern = "".join(moves)
    assert pattern.endswith("D") and pattern.count("D") == 2  # one decoder step per mini-batch (2 of 50)
    for burn_in in pattern.split("D")[:-1]:
        assert len(burn_in) >= 15, pattern  # encoder-only steps (checked every 15) before every decoder step
    # the encoder really learns during the burn-in: its loss on the data improves
    first, last_burn_in = model.calls[0], model.calls[len(pattern.split("D")[0])]
    probe = WatchedVAE(12, 2, **SMALL).eval()
    losses = []
    for call in (first, last_burn_in):
        probe.load_state_dict({**model.state_dict(), **call["params"]})
        pyro.set_rng_seed(0)
        losses.append(Trace_ELBO(num_particles=20).loss(probe.model, probe.guide, train))
    assert losses[1] < losses[0]


# ------------------------------------------------------------------ 5. beta scales model and guide alike
@pytest.mark.parametrize("num_data", [None, 96])
def test_beta_elbo_equals_the_hand_computed_beta_elbo_on_the_same_draw(num_data):
    torch.manual_seed(1)
    beta = 0.3
    model = VAE(12, 3, beta=beta, **SMALL).double()
    x = torch.bernoulli(intensities(24)).double()
    guide_trace = poutine.trace(model.guide).get_trace(x, num_data)
    z = guide_trace.nodes["z"]["value"]
    fixed_guide = poutine.replay(model.guide, trace=guide_trace)  # the same z in the loss and by hand
    loss = Trace_ELBO().loss(model.model, fixed_guide, x, num_data)
    differentiable = Trace_ELBO().differentiable_loss(model.model, fixed_guide, x, num_data)
    with torch.no_grad():
        log_px = model.decoder(z).log_prob(x)
        log_pz = model.prior().log_prob(z)
        log_qz = model.encoder.distribution(x).log_prob(z)
        by_hand = -(log_px + beta * (log_pz - log_qz)).sum() * ((num_data or 24) / 24)
    assert loss == pytest.approx(float(by_hand), rel=1e-9)
    assert float(differentiable.detach()) == pytest.approx(float(by_hand), rel=1e-9)
    # not vacuous: an unscaled guide (or model) would give another value on this draw
    unscaled_guide = -(log_px + beta * log_pz - log_qz).sum() * ((num_data or 24) / 24)
    assert abs(float(unscaled_guide) - float(by_hand)) > 1.0


# ------------------------------------------------------------------ 6. dynamic binarization
def test_dynamic_binarization_feeds_fresh_binary_draws_of_each_image_every_epoch():
    n, bits, d, epochs = 64, 6, 20, 3
    gen = torch.Generator().manual_seed(11)
    ids = ((torch.arange(n).unsqueeze(1) >> torch.arange(bits)) & 1).float()  # exact 0/1: binarize to themselves
    grey = 0.05 + 0.4 * torch.rand(n, d - bits, generator=gen)  # below 1/2: a threshold would give all zeros
    train = torch.cat([ids, grey], 1)
    # a Gaussian likelihood accepts any data: what the model is fed is judged here, not by Bernoulli's support check
    model = WatchedVAE(d, 2, likelihood="normal", **SMALL)
    fit(model, train, epochs=epochs, batch_size=16, dynamic_binarization=True, progress=False)
    seen = {i: [] for i in range(n)}
    for call in model.calls:
        x = call["x"]
        assert set(x.unique().tolist()) <= {0.0, 1.0}, "the model must see binary data"
        for row in x:
            seen[int((row[:bits] * 2 ** torch.arange(bits)).sum())].append(row[bits:])
    assert all(len(draws) == epochs for draws in seen.values())  # each image once per epoch
    for i, draws in seen.items():
        assert any(not torch.equal(draws[0], other) for other in draws[1:]), f"image {i} binarized alike each epoch"
    # the draws are Bernoulli(intensity): their mean matches the intensities' mean
    draws = torch.stack([torch.stack(seen[i]) for i in range(n)])  # (n, epochs, d - bits)
    assert abs(float((draws - grey.unsqueeze(1)).mean())) < 0.03
    assert float(draws.mean()) > 0.15  # far from the all-zero threshold


# ------------------------------------------------------------------ 7. the command line
@pytest.mark.parametrize(
    "argv, match",
    [
        (["compare", "--dataset", "synthetic", "--resume"], "output_dir"),
        (["compare", "--dataset", "synthetic", "--models", "no_such_method"], "unknown model"),
        (["report", "{missing}"], "results.json not found"),
    ],
)
def test_cli_errors_exit_with_status_2_and_one_line(argv, match, tmp_path, capsys):
    argv = [a.format(missing=tmp_path / "missing") for a in argv]
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pyro-lid {argv[0]}: error: ") and match in err
    assert err.count("\n") == 1 and err.endswith("\n")


def test_cli_compare_resume_does_not_retrain_a_finished_method(tmp_path, monkeypatch):
    calls = []
    real_fit = harness.fit

    def counting_fit(*args, **kwargs):
        calls.append(kwargs)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(harness, "fit", counting_fit)
    argv = ["compare", "--dataset", "synthetic", "--smoke-test", "--models", "vae", "--output-dir", str(tmp_path)]
    assert main([*argv, "--resume"]) == 0  # nothing to resume yet: trains
    assert len(calls) == 1
    first = (tmp_path / "results.json").read_text()
    assert main([*argv, "--resume"]) == 0
    assert len(calls) == 1, "compare --resume retrained a method that had finished"
    assert (tmp_path / "results.json").read_text() == first


def test_a_diverged_or_interrupted_run_leaves_the_model_at_full_kl_weight():
    from pyro_lid.infer import TrainingDiverged

    class Failing(VAE):
        def __init__(self, error, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.error, self.steps = error, 0

        def model(self, x, num_data=None):
            self.steps += 1
            if self.steps == 2:  # mid-warm-up: the schedule's weight is far below 1
                if self.error is KeyboardInterrupt:
                    raise KeyboardInterrupt
                pyro.factor("boom", torch.tensor(float("inf")))
            return super().model(x, num_data)

    x = torch.bernoulli(intensities())
    for error in (TrainingDiverged, KeyboardInterrupt):
        model = Failing(error, 12, 2, **SMALL)
        with pytest.raises(error):
            fit(model, x, epochs=3, batch_size=40, kl_schedule=KLSchedule("linear", warmup_epochs=10), progress=False)
        assert model.kl_weight == 1.0, error


# ------------------------------------------------------------------ 8. the maximum per-batch KL
def _kl_after_each_step(model, calls):
    """KL(q(z|x) || N(0, I)) of each training batch's mean, recomputed with torch's closed form at the
    parameters the step left (those the next step saw; the model's final ones after the last step)."""
    from pyro.distributions import Normal
    from torch.distributions import kl_divergence

    final = {k: v.detach().clone() for k, v in model.named_parameters()}
    after = [c["params"] for c in calls[1:]] + [final]
    was_training, values = model.training, []
    model.eval()
    with torch.no_grad():
        for call, params in zip(calls, after):
            for name, p in model.named_parameters():
                p.copy_(params[name])
            q = model.posterior(call["x"])
            prior = Normal(torch.zeros_like(q.mean), 1.0).to_event(1)
            values.append(float(kl_divergence(q, prior).mean()))
        for name, p in model.named_parameters():
            p.copy_(final[name])
    model.train(was_training)
    return values


def test_the_recorded_max_batch_kl_is_the_max_over_the_epochs_batches_of_their_mean_kl():
    x = torch.bernoulli(intensities(n=100, seed=5))
    pyro.set_rng_seed(0)
    model = WatchedVAE(12, 3, **SMALL)
    history = fit(model, x, epochs=3, batch_size=32, lr=3e-2, track_batch_kl=True, progress=False)
    steps = 4  # 100 points in batches of 32
    assert len(model.calls) == 3 * steps
    # the batches are the epoch's permutation, in order
    for epoch in range(3):
        order = torch.randperm(100, generator=torch.Generator().manual_seed(0 * 100003 + epoch))
        for step in range(steps):
            assert torch.equal(model.calls[epoch * steps + step]["x"], x[order[step * 32 : (step + 1) * 32]])
    values = _kl_after_each_step(model, model.calls)
    expected = [max(values[e * steps : (e + 1) * steps]) for e in range(3)]
    assert history["max_batch_kl"] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert len(set(values)) == len(values)  # the parameters moved: each step's value is its own


@pytest.mark.parametrize("model_class", ["VAE", "BNVAE"])
def test_tracking_the_batch_kl_does_not_change_training(model_class):
    from pyro_lid import models

    x = torch.bernoulli(intensities(n=90, seed=6))
    states, losses = [], []
    for track in (False, True):
        pyro.set_rng_seed(0)
        model = getattr(models, model_class)(12, 3, **SMALL)
        history = fit(model, x, x[:30], epochs=2, batch_size=30, track_batch_kl=track, progress=False)
        states.append(model.state_dict())  # parameters and buffers (BN-VAE's running statistics)
        losses.append(history["train_loss"] + history["val_loss"])
        assert ("max_batch_kl" in history.records[0]) == track
    assert losses[0] == losses[1]
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


def test_batch_kl_tracking_refuses_a_prior_without_a_closed_form_kl():
    from pyro_lid.models import GMVAE

    with pytest.raises(ValueError, match="track_batch_kl"):
        fit(
            GMVAE(12, 2, num_components=2, **SMALL),
            torch.bernoulli(intensities()),
            epochs=1,
            track_batch_kl=True,
            progress=False,
        )


# ------------------------------------------------------------------ per-parameter learning rates
def _one_sgd_step(lr_multipliers=None, strategy="standard", **options):
    """The parameters of a small VAE before and after one full-batch SGD step of ``fit``."""
    pyro.set_rng_seed(0)
    model = VAE(12, 2, **SMALL)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    data = torch.bernoulli(intensities(40))
    val = torch.bernoulli(intensities(20, seed=9)) if strategy == "lagging" else None
    fit(model, data, val, epochs=1, batch_size=40, optimizer=torch.optim.SGD, lr=0.1, seed=1, progress=False,
        precision="64-true",
        lr_multipliers=lr_multipliers, strategy=strategy, **options)  # fmt: skip
    return {k: v.detach() - before[k] for k, v in model.named_parameters()}


@pytest.mark.parametrize("strategy", ["standard", "lagging"])
def test_lr_multipliers_scale_exactly_the_matched_parameters_steps(strategy):
    # SGD's step is -lr * grad: the same seed and data give the same gradient, so a multiplier of 0.25 on the
    # decoder must make each decoder step exactly a quarter of the base step and leave the encoder's alone
    base = _one_sgd_step(strategy=strategy)
    scaled = _one_sgd_step({"decoder.*": 0.25}, strategy=strategy)
    assert any(k.startswith("decoder.") for k in base) and any(k.startswith("encoder.") for k in base)
    for key, step in base.items():
        factor = 0.25 if key.startswith("decoder.") else 1.0
        assert step.abs().max() > 0, key
        torch.testing.assert_close(scaled[key], factor * step, rtol=1e-9, atol=1e-12, msg=key)


@pytest.mark.parametrize(
    "multipliers, match",
    [
        ({"dekoder.*": 0.5}, r"'dekoder\.\*' matches no parameter"),
        ({"decoder.*": 0.0}, r"'decoder\.\*'.*> 0"),
        ({"decoder.*": float("nan")}, r"'decoder\.\*'.*> 0"),
        ({"decoder.*": 0.5, "*.bias": 2.0}, r"decoder\.\S*bias.*'decoder\.\*'.*'\*\.bias'"),
        (["decoder.*"], "a mapping"),
    ],
    ids=["unmatched", "zero", "nan", "overlap", "not-a-mapping"],
)
def test_lr_multipliers_refuse_what_would_train_silently_wrong(multipliers, match):
    with pytest.raises(ValueError, match=match):
        fit(VAE(12, 2, **SMALL), torch.bernoulli(intensities(40)), epochs=1, progress=False,
            lr_multipliers=multipliers)  # fmt: skip


@pytest.mark.parametrize("lr", [0.0, -1e-3, float("inf"), "1e-3"])
def test_fit_refuses_a_learning_rate_that_is_not_a_positive_number(lr):
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        fit(VAE(12, 2, **SMALL), torch.bernoulli(intensities(40)), epochs=1, progress=False, lr=lr)


def test_resume_keeps_the_lr_multipliers_and_refuses_other_ones(tmp_path):
    from pyro_lid.infer.checkpoints import CheckpointError

    train = torch.bernoulli(intensities(80))
    init = {k: v.clone() for k, v in VAE(12, 2, **SMALL).state_dict().items()}
    options = dict(batch_size=40, seed=2, progress=False, lr=0.05, lr_multipliers={"decoder.*": 0.1})

    straight = VAE(12, 2, **SMALL)
    straight.load_state_dict(init)
    fit(straight, train, epochs=2, **options)
    resumed = VAE(12, 2, **SMALL)
    resumed.load_state_dict(init)
    checkpoint = tmp_path / "run.pt"
    fit(resumed, train, epochs=1, checkpoint=checkpoint, **options)
    fit(resumed, train, epochs=2, checkpoint=checkpoint, resume=True, **options)
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    with pytest.raises(CheckpointError, match="lr_multipliers"):
        fit(resumed, train, epochs=3, checkpoint=checkpoint, resume=True, **{**options, "lr_multipliers": None})


# ------------------------------------------------------------------ length buckets
def coded_rows(n):
    """``n`` distinct binary rows of 12 pixels: row ``i`` is ``i`` in binary, so a batch names its rows."""
    return ((torch.arange(n)[:, None] >> torch.arange(11, -1, -1)) & 1).float()


def rows_of(x):
    return (x.long() * 2 ** torch.arange(11, -1, -1)).sum(1).tolist()


def test_length_buckets_train_every_row_once_per_epoch_in_fresh_batches_of_similar_length():
    n, batch, seed = 200, 10, 1
    lengths = torch.randint(1, 41, (n,), generator=torch.Generator().manual_seed(0))
    batches = {}
    for bucketed in (False, True):
        model = WatchedVAE(12, 2, **SMALL)
        fit(model, coded_rows(n), epochs=2, batch_size=batch, seed=seed, progress=False,
            bucket_lengths=lengths if bucketed else None)  # fmt: skip
        batches[bucketed] = [rows_of(call["x"]) for call in model.calls]
    for order in batches.values():
        epochs = order[: n // batch], order[n // batch :]
        assert [sorted(sum(e, [])) for e in epochs] == [list(range(n))] * 2  # every row once per epoch
        assert epochs[0] != epochs[1]  # a fresh order each epoch
    # without buckets: the plain permutation of before, drawn from the seed and the epoch
    plain = torch.cat([torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + e)) for e in (0, 1)])
    assert sum(batches[False], []) == plain.tolist()

    def padding(order):  # what the batches, each padded to its longest row, carry
        return sum(int((lengths[b].max() - lengths[b]).sum()) for b in map(torch.tensor, order))

    assert padding(batches[True]) < padding(batches[False]) / 5, (padding(batches[True]), padding(batches[False]))


def test_length_buckets_are_part_of_what_a_resume_must_share(tmp_path):
    from pyro_lid.infer.checkpoints import CheckpointError

    train, lengths = coded_rows(60), torch.arange(60) % 7
    checkpoint = tmp_path / "run.pt"
    options = dict(batch_size=20, progress=False, checkpoint=checkpoint)
    fit(VAE(12, 2, **SMALL), train, epochs=1, bucket_lengths=lengths, **options)
    for other in (None, lengths.flip(0)):
        with pytest.raises(CheckpointError, match="bucket_lengths"):
            fit(VAE(12, 2, **SMALL), train, epochs=2, resume=True, bucket_lengths=other, **options)
    fit(VAE(12, 2, **SMALL), train, epochs=2, resume=True, bucket_lengths=lengths.tolist(), **options)  # a list too


@pytest.mark.parametrize(
    "lengths, match",
    [
        (torch.ones(59, dtype=torch.long), r"one length per training row: shape \(60,\), got \(59,\)"),
        (torch.ones(60, 2, dtype=torch.long), r"shape \(60,\), got \(60, 2\)"),
        (torch.full((60,), 2.5), "must be integers .*, got torch.float32"),
        (torch.arange(60) - 3, "must be >= 0, got -3 at row 0"),
    ],
)
def test_fit_refuses_bucket_lengths_that_do_not_describe_the_rows(lengths, match):
    model = VAE(12, 2, **SMALL)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        fit(model, coded_rows(60), epochs=1, batch_size=20, progress=False, bucket_lengths=lengths)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

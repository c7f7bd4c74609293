"""Data parallelism: two processes (gloo, CPU), each on half of every global mini-batch, train exactly as one
process on the whole batch.

Why the comparison can be tight. SVI's ELBO is a Monte Carlo estimate, so the noise must match: the
models here draw the reparameterization noise of ``z`` as a fixed function of the data point
(:class:`FixedNoise`), so a point gets the same noise whichever process, batch or step it is in, and
the objective of a step is deterministic. Everything runs in float64. What is left is the order of
floating-point sums (one reduction over the global batch against two half reductions and the
all-reduce), about 1e-16 relative per step; over the few hundred SGD steps here (Lagging's inner
loops included) that stays far below the tolerance ``rtol=1e-7, atol=1e-9``, while each mistake the
test exists for moves parameters by more than 1e-4: a process that skips the all-reduce trains on half
the data; scaling by the local instead of the global data size (``num_data``) halves the gradient;
summing instead of averaging doubles it. The optimizer is plain SGD because Adam divides by the
gradient's scale and would hide the last two; Adam runs too (the standard VAE case) for the common
setup. The sharding is checked on the data each process's model saw.
"""

import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pyro.poutine.messenger import Messenger

from pyro_lid.infer import fit
from pyro_lid.models import LIDVAE, VAE

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available() and "fork" in mp.get_all_start_methods()),
    reason="needs torch.distributed with the gloo backend and fork-started processes (two CPU processes)",
)

N, D, K, BATCH = 48, 6, 2, 16
TOLERANCE = dict(rtol=1e-7, atol=1e-9)


def data():
    gen = torch.Generator().manual_seed(0)
    mixing = torch.randn(K, D, generator=gen, dtype=torch.float64)
    z = torch.randn(N + 16, K, generator=gen, dtype=torch.float64)
    x = z @ mixing + 0.3 * torch.randn(N + 16, D, generator=gen, dtype=torch.float64)
    return x[:N], x[N:]


class FixedNoise(Messenger):
    """The guide's ``z = loc + scale * eps`` with ``eps`` given (no random draw)."""

    def __init__(self, eps):
        super().__init__()
        self.eps = eps

    def _pyro_sample(self, msg):
        if msg["name"] == "z" and not msg["is_observed"]:
            normal = msg["fn"].base_dist
            msg["value"] = normal.loc + normal.scale * self.eps
            msg["done"] = True


class Recorded:
    """The guide draws fixed per-point noise, a function of the point only; training calls record their data."""

    NOISE = torch.randn(D, K, generator=torch.Generator().manual_seed(7), dtype=torch.float64) / D**0.5

    def guide(self, x, num_data=None):
        if self.training:
            self.seen.append(x.detach().clone())
        with FixedNoise(x @ self.NOISE.to(x.dtype)):
            return super().guide(x, num_data)


class FixedNoiseVAE(Recorded, VAE):
    pass


class FixedNoiseLIDVAE(Recorded, LIDVAE):
    pass


CASES = {
    "vae-standard": (FixedNoiseVAE, {"strategy": "standard", "epochs": 2}),
    "vae-standard-adam": (FixedNoiseVAE, {"strategy": "standard", "epochs": 2, "optimizer": "adam", "lr": 1e-2}),
    "vae-lagging": (FixedNoiseVAE, {"strategy": "lagging", "epochs": 1}),
    # batches of rows of similar length: every process shards the same bucketed global batches
    "vae-length-buckets": (FixedNoiseVAE, {"strategy": "standard", "epochs": 2, "bucket_lengths": torch.arange(N) % 5}),
    "lidvae-standard": (FixedNoiseLIDVAE, {"strategy": "standard", "epochs": 2}),
    "lidvae-lagging": (FixedNoiseLIDVAE, {"strategy": "lagging", "epochs": 1}),
}


def make(case):
    cls, _ = CASES[case]
    torch.manual_seed(3)  # the same initial parameters in every process
    kwargs = {"icnn_hidden_dims": (8,)} if cls is FixedNoiseLIDVAE else {}
    model = cls(D, K, hidden_dims=(8,), likelihood="normal", **kwargs).double()
    model.seen = []
    return model


def train(case, **parallel):
    _, options = CASES[case]
    options = {"optimizer": torch.optim.SGD, "lr": 2e-4, **options}
    model = make(case)
    x, val = data()
    history = fit(model, x, val, batch_size=BATCH, progress=False, seed=1, **options, **parallel)
    return model, history


def _worker(rank, port, out, cases):
    """One of two processes, started as torchrun would: the environment names the rank and the rendezvous."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", NODE_RANK="0",
                      RANK=str(rank), LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    for case in cases:
        model, history = train(case, devices=2, distributed="ddp", accelerator="cpu")
        result = {"state": model.state_dict(), "history": history.records, "seen": model.seen}
        torch.save(result, out / f"{case}-{rank}.pt")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def parallel_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.start_processes(_worker, args=(_free_port(), out, list(CASES)), nprocs=2, join=True, start_method="fork")
    return {case: [torch.load(out / f"{case}-{r}.pt", weights_only=False) for r in range(2)] for case in CASES}


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_on_half_batches_equal_one_process_on_the_whole_batch(case, parallel_runs):
    single, history = train(case)
    runs = parallel_runs[case]
    init = make(case).state_dict()
    for key, value in single.state_dict().items():
        assert torch.equal(runs[0]["state"][key], runs[1]["state"][key]), f"the processes disagree on {key}"
        torch.testing.assert_close(runs[0]["state"][key], value, **TOLERANCE, msg=lambda m, key=key: f"{key}: {m}")
    moved = max(float((v - init[k]).abs().max()) for k, v in single.state_dict().items())
    assert moved > 1e-3  # not vacuous: training moved the parameters far beyond the tolerance
    # the reported loss is the global batch's, and the recipe's decisions are the same
    for key in ("train_loss", "val_loss"):
        assert [r[key] for r in runs[0]["history"]] == pytest.approx(history[key], rel=1e-9)
    if "lagging" in case:
        assert [r["aggressive"] for r in runs[0]["history"]] == history["aggressive"] == [True]
        assert [r["encoder_steps_per_decoder_step"] for r in runs[0]["history"]] == history[
            "encoder_steps_per_decoder_step"
        ]
    # sharding: in every training call each process saw its contiguous half of the single process's batch
    assert len(runs[0]["seen"]) == len(runs[1]["seen"]) == len(single.seen)
    for whole, first, second in zip(single.seen, runs[0]["seen"], runs[1]["seen"]):
        assert first.shape[0] == second.shape[0] == whole.shape[0] // 2
        assert torch.equal(torch.cat([first, second]), whole)


def test_fit_spawns_the_processes_itself_and_hands_back_the_trained_model():
    single, history = train("vae-standard")
    spawned, spawned_history = train("vae-standard", devices=2, distributed="ddp_fork", accelerator="cpu")
    for key, value in single.state_dict().items():
        torch.testing.assert_close(spawned.state_dict()[key], value, **TOLERANCE)
    assert spawned_history["train_loss"] == pytest.approx(history["train_loss"], rel=1e-9)
    assert not spawned.training


def test_batches_that_leave_a_process_without_data_are_refused():
    x, _ = data()
    with pytest.raises(ValueError, match="empty mini-batch"):
        fit(make("vae-standard"), x[:33], batch_size=16, devices=2, distributed="ddp_spawn", accelerator="cpu")


# ---------------------------------------------------------------- work done on the first process only
# Validation and checkpoint writes run on the first process; the others wait for its result in a collective
# (a broadcast, a barrier). Had the first process failed there without telling them, they would wait until the
# backend's timeout (30 minutes with NCCL) while it sat in the user's ``except`` or a notebook cell.
FIRST_PROCESS_FAILURES = {
    "validation": ("pyro_lid.diagnostics.collapse", "kl_divergence", ValueError("validation broke here")),
    "checkpoint": ("pyro_lid.infer.engine.callbacks.checkpoint", "save_checkpoint", OSError("disk full here")),
    "progress line": ("pyro_lid.infer.engine.callbacks.progress", "progress_line", BrokenPipeError("stderr closed")),
}


def _failing_worker(rank, port, out, failure):
    import importlib

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", NODE_RANK="0",
                      RANK=str(rank), LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    module, name, error = FIRST_PROCESS_FAILURES[failure]
    if rank == 0:

        def broken(*args, **kwargs):
            raise error

        setattr(importlib.import_module(module), name, broken)
    model = make("vae-standard")
    x, val = data()
    options = dict(batch_size=BATCH, epochs=2, progress=False, devices=2, distributed="ddp", accelerator="cpu")
    if failure == "checkpoint":
        options["checkpoint"] = out / "ckpt.pt"
    try:
        fit(model, x, val, **options)
        outcome = (None, "finished")
    except Exception as caught:  # noqa: BLE001 - the test reads what each process raised
        outcome = (type(caught).__name__, str(caught))
    torch.save(outcome, out / f"{failure}-{rank}.pt")
    if rank == 0:  # stay alive (as a notebook or a user's ``except`` would) until the other process is done
        deadline = time.monotonic() + 60
        while not (out / f"{failure}-1.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.1)


def _outcomes_of_two_processes(worker, args, out, stem: str, waited_for: str) -> list:
    """Start ``worker(rank, *args)`` in two fork-started processes and read what each saved in ``out/stem-RANK.pt``.
    Each finishes in seconds; one that waits for the other in a collective would wait 30 minutes (NCCL's timeout),
    so both are killed after 120 s and the test names the one that did not finish."""
    context = mp.start_processes(worker, args=args, nprocs=2, join=False, start_method="fork")
    deadline = time.monotonic() + 120
    try:
        while not context.join(timeout=max(0.1, deadline - time.monotonic())) and time.monotonic() < deadline:
            pass
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    outcomes = []
    for rank in range(2):
        path = out / f"{stem}-{rank}.pt"
        assert path.exists(), f"process {rank} did not finish: it waited for {waited_for}"
        outcomes.append(torch.load(path, weights_only=False))
    return outcomes


@pytest.mark.parametrize("failure", list(FIRST_PROCESS_FAILURES))
def test_a_failure_on_the_first_process_stops_every_process_with_its_reason(failure, tmp_path):
    args = (_free_port(), tmp_path, failure)
    outcomes = _outcomes_of_two_processes(_failing_worker, args, tmp_path, failure, "the first process")
    _, _, error = FIRST_PROCESS_FAILURES[failure]
    assert outcomes[0] == (type(error).__name__, str(error))  # the first process raises its own error
    kind, message = outcomes[1]
    assert kind == "FirstProcessFailed", outcomes[1]  # the other one says why it stops
    assert str(error) in message and type(error).__name__ in message


# ---------------------------------------------------------------- a stop signal that reaches one process
# Under a scheduler every process gets SIGTERM, but not at the same instant, and a Ctrl-C or a ``kill`` may reach
# only one. A process that stopped alone would leave the others waiting in the next step's all-reduce.
def _signalled_worker(rank, port, out):
    import signal

    from pyro_lid.infer.engine.callbacks import Callback

    class SignalSelf(Callback):
        def on_train_step_end(self, loop, epoch, step, x):
            if rank == 1 and (epoch, step) == (0, 0):
                signal.raise_signal(signal.SIGTERM)

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", NODE_RANK="0",
                      RANK=str(rank), LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    x, val = data()
    options = dict(batch_size=BATCH, epochs=2, progress=False, devices=2, distributed="ddp", accelerator="cpu")
    try:
        fit(make("vae-standard"), x, val, checkpoint=out / "ckpt.pt", callbacks=[SignalSelf()], **options)
        outcome = (None, "finished", None)
    except BaseException as caught:  # noqa: BLE001 - the test reads what each process raised
        outcome = (type(caught).__name__, str(caught), getattr(caught, "position", None))
    torch.save(outcome, out / f"stop-{rank}.pt")


def test_a_stop_signal_on_one_process_stops_every_process_after_the_same_step(tmp_path):
    args = (_free_port(), tmp_path)
    outcomes = _outcomes_of_two_processes(_signalled_worker, args, tmp_path, "stop", "the one that had stopped")
    # the signal came after step index 0; the processes agree after the next step: step 2 of N // BATCH
    position = f"epoch 1, step 2 of {N // BATCH}"
    assert [(kind, at) for kind, _, at in outcomes] == [("TrainingInterrupted", position)] * 2, outcomes
    assert "stopped by a stop signal on another process" in outcomes[0][1]
    assert "stopped by SIGTERM" in outcomes[1][1]
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    assert (saved["epoch"], saved["step"]) == (0, 2)

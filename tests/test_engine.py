"""The engine's own pieces, beyond what ``fit`` did before: loggers, refused options, recipes as objects."""

import pytest
import torch

from pyro_lid.infer import fit
from pyro_lid.infer.engine import AutoencoderPretraining, Lagging, Standard, load_checkpoint, make_strategy
from pyro_lid.models import VAE


def _data():
    gen = torch.Generator().manual_seed(0)
    return torch.bernoulli(torch.rand(60, 6, generator=gen), generator=gen)


def test_records_go_to_a_csv_logger_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x = _data()
    fit(VAE(6, 2, hidden_dims=(8,)), x[:40], x[40:], epochs=2, batch_size=20, progress=False)
    assert list(tmp_path.iterdir()) == []  # nothing written by default
    history = fit(VAE(6, 2, hidden_dims=(8,)), x[:40], x[40:], epochs=2, batch_size=20, progress=False,
                  log_dir=tmp_path / "logs")  # fmt: skip
    (metrics,) = list((tmp_path / "logs").rglob("metrics.csv"))
    lines = metrics.read_text().splitlines()
    header = lines[0].split(",")
    assert {"train_loss", "val_loss", "kl_weight", "grad_evals", "step"} <= set(header)
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert [float(r["train_loss"]) for r in rows] == pytest.approx(history["train_loss"])
    with pytest.raises(ValueError, match="log_dir"):
        fit(VAE(6, 2, hidden_dims=(8,)), x, epochs=1, logger="csv", progress=False)


def test_strategies_are_objects_and_names_map_to_them():
    assert isinstance(make_strategy("standard"), Standard) and isinstance(make_strategy("lagging"), Lagging)
    wrapped = make_strategy("lagging", pretrain_epochs=2)
    assert isinstance(wrapped, AutoencoderPretraining) and isinstance(wrapped.inner, Lagging)
    assert wrapped.kl_time(1, 0.5) is None and wrapped.kl_time(3, 0.5) == 1.5
    with pytest.raises(ValueError, match="strategy must be one of"):
        make_strategy("aggressive")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"precision": "16-mixed"}, "gradient scaler"),
        ({"devices": 0}, "devices must be >= 1"),
        ({"num_nodes": 0}, "num_nodes must be an integer >= 1"),
    ],
)
def test_scale_out_options_are_refused_before_training(options, message):
    model = VAE(6, 2, hidden_dims=(8,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        fit(model, _data(), epochs=1, progress=False, **options)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_double_precision_converts_model_and_data(tmp_path):
    model = VAE(6, 2, hidden_dims=(8,))
    fit(model, _data(), epochs=1, batch_size=20, precision="64-true", progress=False, checkpoint=tmp_path / "c.pt")
    assert all(p.dtype == torch.float64 for p in model.parameters())
    state = load_checkpoint(tmp_path / "c.pt", map_location="cpu")
    assert {"model", "optim", "history", "epoch", "best", "since_best", "rng"} <= set(state)

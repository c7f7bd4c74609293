"""The Lagging recipe (He et al. 2019): an encoder-only inner loop before each decoder step, while the
validation mutual information rises (see :mod:`pyro_lid.infer.aggressive` for the method)."""

from __future__ import annotations

from ...aggressive import JointOptim, LaggingState, encoder_burn_in, encoder_parameters, random_batches
from .base import optimizer_state
from .standard import Standard

__all__ = ["Lagging"]


class Lagging(Standard):
    """Aggressive encoder training, then ordinary steps once the validation MI stops rising.

    Both phases step the encoder's and the decoder's optimizers (the ordinary phase both on one gradient), so
    Adam's moments carry over the switch. Checkpoint entries: ``optim`` (unused; kept for older checkpoints),
    ``optim_encoder``, ``optim_decoder``, ``lagging`` (phase and best MI) and ``batch_rng`` (the inner loop's
    batch sampler). Under data parallelism every process draws the same global inner batch and trains on its
    shard; the inner loop's stopping rule reads the all-reduced loss, so all processes take the same number of
    inner steps.
    """

    needs_validation_mi = True

    def __init__(self, max_inner_steps: int = 100, check_every: int = 15):
        self.max_inner_steps, self.check_every = max_inner_steps, check_every

    def setup(self, loop) -> None:
        import torch

        super().setup(loop)
        encoder = encoder_parameters(loop.model)
        encoder_ids = {id(p) for p in encoder}
        decoder = [p for p in loop.model.parameters() if id(p) not in encoder_ids]
        self.encoder_optim, self.decoder_optim = loop.make_optim(encoder), loop.make_optim(decoder)
        self.encoder_svi, self.decoder_svi = loop.make_svi(self.encoder_optim), loop.make_svi(self.decoder_optim)
        # the ordinary phase: both parts on one gradient, with the aggressive phase's optimizers (no fresh Adam)
        self.joint_svi = loop.make_svi(JointOptim(self.encoder_optim, self.decoder_optim))
        self.phase = LaggingState()
        self.aggressive, self.encoder_steps = self.phase.aggressive, 0  # set again at every epoch's start
        self.batch_rng = torch.Generator().manual_seed(loop.seed + 7919)
        self.fresh_batch = random_batches(
            loop.train_data, loop.batch_size, self.batch_rng, loop.dynamic_binarization, loop.device, shard=loop.shard
        )

    def optimizers(self) -> list:
        return [self.optim, self.encoder_optim, self.decoder_optim]

    def on_epoch_start(self, loop, epoch: int) -> None:
        self.aggressive, self.encoder_steps = self.phase.aggressive, 0

    def training_step(self, loop, x) -> tuple[float, int]:
        if not self.aggressive:
            return self.joint_svi.step(x, loop.num_data), loop.gradient_evaluations()
        inner = encoder_burn_in(
            self.encoder_svi, self.fresh_batch, loop.num_data, self.max_inner_steps, self.check_every
        )
        self.encoder_steps += inner
        return self.decoder_svi.step(x, loop.num_data), inner + loop.gradient_evaluations()

    def on_epoch_end(self, loop, record: dict) -> None:
        record["aggressive"] = self.aggressive
        record["encoder_steps_per_decoder_step"] = self.encoder_steps / loop.steps_per_epoch
        if "mi" in record:
            self.phase.end_of_epoch(record["mi"])

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "lagging": self.phase.state_dict(),
            "optim_encoder": optimizer_state(self.encoder_optim),
            "optim_decoder": optimizer_state(self.decoder_optim),
            "batch_rng": self.batch_rng.get_state(),
            # what on_epoch_start set, for a run resumed between two steps of the epoch
            "lagging_epoch": {"aggressive": self.aggressive, "encoder_steps": self.encoder_steps},
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.phase.load_state_dict(state["lagging"])
        self.encoder_optim.set_state(state["optim_encoder"])
        self.decoder_optim.set_state(state["optim_decoder"])
        self.batch_rng.set_state(state["batch_rng"].cpu())
        epoch_state = state.get("lagging_epoch") or {}
        self.aggressive = epoch_state.get("aggressive", self.phase.aggressive)
        self.encoder_steps = epoch_state.get("encoder_steps", 0)

"""Mixture priors placed on the data's clusters after a warm-up: k-means of the encoder's posterior means."""

from __future__ import annotations

import torch

from .base import Callback

__all__ = ["ClusterInitialization"]


class ClusterInitialization(Callback):
    r"""At the end of epoch ``after_epochs`` put the mixture prior's components on k-means clusters of
    the posterior means of (at most ``num_points``) training points, with the aggregate posterior's
    moments (:meth:`~pyro_lid.models.GaussianMixturePrior.initialize_from`).

    Why: a Gaussian-mixture prior learned from a random start lets all its components merge into
    one (every image in one cluster: the exchangeable, non-identifiable mixture); a warm-up epoch
    gives the encoder structure, k-means finds it, and the components start apart, where the ELBO
    keeps them. The points are drawn and binarized with their own generator (``seed``), so training's
    random streams are untouched and every process of a data-parallel run makes the same prior.
    It happens once; a run resumed after that epoch keeps the prior from its checkpoint. The history
    records ``clusters_initialized`` (the epoch) in that epoch's record.
    """

    def __init__(self, after_epochs: int = 1, num_points: int = 5000, seed: int = 0):
        if isinstance(after_epochs, bool) or not isinstance(after_epochs, int) or after_epochs < 1:
            raise ValueError(f"cluster initialization needs after_epochs >= 1 (an integer), got {after_epochs!r}")
        self.after_epochs, self.num_points, self.seed = after_epochs, num_points, seed

    def on_train_epoch_end(self, loop, epoch: int, record: dict) -> None:
        if epoch + 1 != self.after_epochs:
            return
        model, data = loop.model, loop.train_data
        generator = torch.Generator().manual_seed(self.seed)
        idx = torch.randperm(data.shape[0], generator=generator)[: self.num_points]
        x = data[idx]
        if loop.dynamic_binarization:
            x = torch.bernoulli(x, generator=generator)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                q = model.posterior(x.to(loop.device))
                assignment = model.prior.initialize_from(q.mean, generator, q.variance)
        finally:
            model.train(was_training)
        record["clusters_initialized"] = epoch + 1
        record["clusters_at_initialization"] = int(assignment.unique().numel())

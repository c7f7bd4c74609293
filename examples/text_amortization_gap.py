"""How much ELBO a text comparison's amortized encoder leaves on the table: per-sentence ELBO of q(z|x) from the
encoder against a Gaussian q optimized for each sentence, with the decoder held fixed.

The gap (optimized minus amortized, nats per sentence) bounds what a better encoder, or semi-amortized refinement
(SA-VAE), could add to the likelihood of the same decoder. ``docs/text.rst`` ("Trained, the topic directions did not
yet pay") reports it for LIDSVAE on the Penn Treebank.

Usage::

    OMP_NUM_THREADS=1 python examples/text_amortization_gap.py runs/ptb/seed0 \\
        lidsvae:margin=10:latent_in_lstm=false --sentences 100

It rebuilds the model from the comparison's protocol and last checkpoint, takes the first ``--sentences`` validation
sentences, estimates each ELBO with 32 reparameterized samples, and optimizes the posterior means and log standard
deviations with Adam (``--steps``, ``--lr``; 4 samples per step) from the encoder's values.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from pyro_lid.experiments.methods import file_stem, resolve_text_method
from pyro_lid.experiments.runs import read_results
from pyro_lid.experiments.text_comparison import _text_model, load_text_data
from pyro_lid.infer.engine.callbacks.checkpoint import load_checkpoint


def elbo(model, x, mu, log_sd, samples):
    """Monte Carlo ELBO per sentence of q = N(mu, exp(log_sd)^2) under a standard normal prior, with its terms."""
    z = mu + log_sd.exp() * torch.randn(samples, *mu.shape)
    reconstruction = torch.stack([model.decoder.sequence_log_prob(x, zi) for zi in z]).mean(0)
    kl = 0.5 * (mu**2 + (2 * log_sd).exp() - 1 - 2 * log_sd).sum(-1)
    return reconstruction - kl, reconstruction, kl


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a text comparison's output directory")
    parser.add_argument("model", help="the method spec of one of its rows")
    parser.add_argument("--sentences", type=int, default=100)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--lr", type=float, default=0.1)
    args = parser.parse_args()
    saved = read_results(args.run_dir)
    if saved is None:
        parser.error(f"{args.run_dir / 'results.json'} not found")
    p = saved["protocol"]
    corpus = load_text_data(p["dataset"], None, p["max_length"], p["max_vocab"], p["num_sentences"], p["seed"])
    model = _text_model(resolve_text_method(args.model), corpus, p["latent_dim"], p["embed_dim"], p["hidden_dim"],
                        p["word_dropout"])  # fmt: skip
    model.load_state_dict(load_checkpoint(args.run_dir / f"checkpoint_{file_stem(args.model)}.pt", "cpu")["model"])
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    x = corpus.valid[: args.sentences]
    x = x[:, : int((x != 0).sum(1).max())]
    torch.manual_seed(0)
    with torch.no_grad():
        q = model.posterior(x)
        mu, log_sd = q.mean.clone(), q.stddev.log().clone()
        before = elbo(model, x, mu, log_sd, 32)
    mu.requires_grad_(), log_sd.requires_grad_()
    optimizer = torch.optim.Adam([mu, log_sd], lr=args.lr)
    for _ in range(args.steps):
        optimizer.zero_grad()
        (-elbo(model, x, mu, log_sd, 4)[0].sum()).backward()
        optimizer.step()
    with torch.no_grad():
        after = elbo(model, x, mu, log_sd, 32)
    for label, (total, reconstruction, kl) in (("amortized", before), ("optimized", after)):
        print(f"{label}: ELBO {total.mean():.3f} (reconstruction {reconstruction.mean():.3f}, KL {kl.mean():.3f})")
    print(f"gap: {float((after[0] - before[0]).mean()):.3f} nats per sentence ({args.model}, {args.run_dir})")


if __name__ == "__main__":
    main()

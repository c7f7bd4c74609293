"""Sequence models: LSTMVAE, LIDSVAE (injective output layer), the LSTM language model, decoding."""

import itertools
import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from pyro_lid.data import sentence_lengths
from pyro_lid.diagnostics import head_information
from pyro_lid.models import LIDSVAE, LSTMVAE, LSTMLanguageModel
from pyro_lid.models.sequence import BOS, EOS, PAD, UNK

F64 = torch.float64
V, K, E, H = 12, 3, 8, 10
WORDS = list(range(UNK + 1, V))  # ids of ordinary words
MODELS = [LSTMVAE, LIDSVAE]


def batch(sentences, extra_pad=0):
    """Sentences (lists of word ids) as a padded (B, T) batch ``<s> words </s> <pad>...``."""
    length = max(len(s) for s in sentences) + 2 + extra_pad
    x = torch.full((len(sentences), length), PAD, dtype=torch.long)
    for i, s in enumerate(sentences):
        x[i, : len(s) + 2] = torch.tensor([BOS, *s, EOS])
    return x


def random_sentences(n, low=1, high=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(low, high + 1, (n,), generator=gen)
    return [torch.tensor(WORDS)[torch.randint(len(WORDS), (int(k),), generator=gen)].tolist() for k in lengths]


def make(cls, seed=0, scale=0.0, **kwargs):
    """A float64 model; ``scale`` > 0 moves every parameter off its initialization (varied outputs)."""
    torch.manual_seed(seed)
    model = cls(V, **{"latent_dim": K, "embed_dim": E, "hidden_dim": H, **kwargs}).double()
    if scale:
        gen = torch.Generator().manual_seed(seed + 100)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model.eval()


def assert_valid_layout(tokens, max_length=None):
    """LongTensor rows ``<s> words </s> <pad>...``: ids < V, no <pad>/<s> among the words, no empty column."""
    assert tokens.dtype == torch.long and tokens.dim() >= 2
    rows = tokens.reshape(-1, tokens.shape[-1])
    assert (rows >= 0).all() and (rows < V).all()
    assert (rows[:, 0] == BOS).all()
    if max_length is not None:
        assert rows.shape[1] <= max_length
    assert (rows[:, -1] != PAD).any(), "a trailing all-<pad> column"
    for row in rows.tolist():
        end = row.index(EOS)  # a </s> in every row
        assert all(t not in (PAD, BOS, EOS) for t in row[1:end]), row
        assert all(t == PAD for t in row[end + 1 :]), row


# ---------------------------------------------------------------------------------------------- (1) injectivity


@pytest.mark.parametrize("inner", ["diagonal", "brenier"])
def test_lidsvae_logits_are_injective_in_z_with_margin_at_every_prefix(inner):
    margin = 0.7
    kwargs = {"inner_hidden_dims": [6]} if inner == "brenier" else {}
    model = make(LIDSVAE, scale=0.5, margin=margin, inner=inner, **kwargs)
    head = model.decoder.head
    with torch.no_grad():  # one direction of h at (nearly) the floor: the bound is tight there
        if inner == "diagonal":
            head.injective_map.scale_raw[0] = -30.0
        else:
            head.injective_map.inner_map.potential.alpha_raw.fill_(-30.0)
    bound = model.injectivity_bound().item()
    assert margin <= bound < margin + 1e-6 if inner == "diagonal" else margin <= bound
    ones = torch.ones(V, dtype=F64)

    # the head at random decoder states (held fixed): J = Q J_h, columns orthogonal to the ones vector
    gen = torch.Generator().manual_seed(3)
    states = 3 * torch.randn(6, H, generator=gen, dtype=F64)
    for z in torch.randn(4, K, generator=gen, dtype=F64):
        jac = torch.autograd.functional.jacobian(lambda z: head(states, z), z)  # (6, V, K)
        assert torch.linalg.matrix_rank(jac).eq(K).all()
        assert torch.linalg.svdvals(jac)[:, -1].min() >= bound - 1e-9
        assert (ones @ jac).abs().max() < 1e-10  # softmax-invariant direction: no information lost to it

    # the whole decoder at random prefixes, its states depending on z: the log-probabilities keep the margin
    prefixes = torch.cat([torch.full((5, 1), BOS), torch.randint(UNK, V, (5, 6), generator=gen)], 1)
    for z in torch.randn(3, K, generator=gen, dtype=F64):

        def log_probs(z):
            return model.decoder.logits(prefixes, z.expand(5, K)).log_softmax(-1)  # (5, 7, V)

        jac = torch.autograd.functional.jacobian(log_probs, z).reshape(-1, V, K)
        assert torch.linalg.svdvals(jac)[:, -1].min() >= bound - 1e-9
        # every step's distribution alone gives z back, from log-probabilities or logits
        assert (model.latent_from_log_probs(log_probs(z)) - z).abs().max() < 1e-8
        logits = model.decoder.logits(prefixes, z.expand(5, K))
        assert (model.latent_from_log_probs(logits) - z).abs().max() < 1e-8


@pytest.mark.parametrize("learn_subspace", [False, True], ids=["fixedQ", "learnedQ"])
def test_lidsvae_with_word_frequencies_keeps_z_recoverable_and_its_margin_in_fisher_units(learn_subspace):
    gen = torch.Generator().manual_seed(5)
    counts = torch.logspace(0, -3, V, dtype=F64)[torch.randperm(V, generator=gen)]
    model = make(LIDSVAE, scale=0.5, margin=0.3, word_frequencies=counts, learn_subspace=learn_subspace)
    injective = model.decoder.head.injective_map
    w = injective.metric_sqrt**2
    assert abs(w.sum().item() - 1) < 1e-6 and torch.allclose(w, counts / counts.sum(), rtol=1e-5)  # normalized
    q = injective.subspace
    assert (q.T @ torch.diag(w) @ q - torch.eye(K, dtype=F64)).abs().max() < 1e-10  # unit Fisher length at w
    assert (q.T @ q - torch.eye(K, dtype=F64)).abs().max() > 0.1  # and not orthonormal: the metric is in force
    bound = model.injectivity_bound().item()
    prefixes = torch.cat([torch.full((4, 1), BOS), torch.randint(UNK, V, (4, 5), generator=gen)], 1)
    for z in torch.randn(3, K, generator=gen, dtype=F64):

        def log_probs(z):
            return model.decoder.logits(prefixes, z.expand(4, K)).log_softmax(-1)

        assert (model.latent_from_log_probs(log_probs(z)) - z).abs().max() < 1e-8
        jac = torch.autograd.functional.jacobian(log_probs, z).reshape(-1, V, K)
        assert torch.linalg.svdvals(jac)[:, -1].min() >= bound - 1e-9
    for bad in (torch.ones(V + 1), torch.zeros(V), -torch.ones(V)):
        with pytest.raises(ValueError, match="word_frequencies must be 12 finite positive"):
            LIDSVAE(V, K, E, H, word_frequencies=bad)


def test_lstmvae_logits_are_not_injective_in_z_by_construction():
    """The contrast: the ordinary output layer ignores z at fixed states (the Jacobian is zero)."""
    model = make(LSTMVAE, scale=0.5)
    states = torch.randn(4, H, dtype=F64)
    jac = torch.autograd.functional.jacobian(lambda z: model.decoder.head(states, z), torch.randn(K, dtype=F64))
    assert jac.abs().max() == 0


def _head_fisher_by_enumeration(model, x):
    """Each sentence's Fisher information about z through the output layer alone, at its posterior mean:
    sum over predicted steps t and every word y of p_t(y) s s^T, s = d log p_t(y) / dz at fixed states."""
    z = model.posterior(x).mean
    hidden, _ = model.decoder._run(x[:, :-1], z, model.decoder.initial_state(z))
    out = []
    for i in range(x.shape[0]):
        n = int(sentence_lengths(x[i : i + 1]))
        states = hidden[i, :n].detach()

        def log_p(zi, states=states):
            return model.decoder.head(states, zi).log_softmax(-1)

        scores = torch.autograd.functional.jacobian(log_p, z[i].detach())  # (n, V, K): one score per (t, y)
        probs = log_p(z[i]).exp()
        out.append(torch.einsum("ty,tyk,tyj->kj", probs, scores, scores))
    return torch.stack(out)


@pytest.mark.parametrize("options", [{}, {"inner": "brenier"}, {"metric": True}], ids=["diagonal", "brenier", "metric"])
def test_head_information_is_the_fisher_information_of_the_output_layer(options):
    """Against an enumeration of E_y[score score^T] with autograd scores, in float64, padding included."""
    options = dict(options)
    if options.pop("metric", False):
        options["word_frequencies"] = torch.rand(V, generator=torch.Generator().manual_seed(5)) + 0.05
    model = make(LIDSVAE, seed=2, scale=0.3, **options)
    x = batch(random_sentences(5, seed=4), extra_pad=1)
    expected = _head_fisher_by_enumeration(model, x).detach()
    got = head_information(model, x, batch_size=2)
    assert (got["per_sentence"] - expected.diagonal(dim1=1, dim2=2).sum(-1)).abs().max() < 1e-10
    mean = expected.mean(0)
    assert (got["information_per_dim"] - mean.diagonal()).abs().max() < 1e-10
    assert got["information"] == pytest.approx(float(mean.trace()), rel=1e-10)
    assert got["min_eigenvalue"] == pytest.approx(float(torch.linalg.eigvalsh(mean)[0]), rel=1e-8)
    # the price: -E[1/2 g^T (I + F)^{-1} g] + 1/2 log det(I + F) for g ~ N(0, F), by its eigenvalues
    lam = torch.linalg.eigvalsh(expected)
    assert got["price"] == pytest.approx(
        float((0.5 * torch.log1p(lam) - 0.5 * lam / (1 + lam)).sum(-1).mean()), rel=1e-9
    )


def test_head_information_at_uniform_predictions_is_length_times_scale_squared_over_vocabulary():
    """Closed form: free part 0, offset 0, z = 0 -> every p_t uniform and F(x) = (n_x / V) diag(s)^2, so padding
    (sentences of 2 to 7 predicted tokens) counts nothing and the information grows with the scale squared."""
    model = make(LIDSVAE, seed=1, margin=2.0)
    with torch.no_grad():
        model.decoder.head.linear.weight.zero_()
        model.decoder.head.injective_map.offset.zero_()
    model.posterior = lambda x: dist.Normal(torch.zeros(x.shape[0], K, dtype=F64), 1.0).to_event(1)
    x = batch(random_sentences(6, seed=3), extra_pad=2)
    n = sentence_lengths(x).to(F64)
    s2 = model.decoder.head.injective_map.scale.detach() ** 2
    got = head_information(model, x)
    assert (got["per_sentence"] - n * s2.sum() / V).abs().max() < 1e-12
    assert (got["information_per_dim"] - n.mean() * s2 / V).abs().max() < 1e-12
    assert got["min_eigenvalue"] == pytest.approx(float(n.mean() * s2.min() / V), rel=1e-10)
    a = n[:, None] * s2 / V  # each sentence's diagonal F
    assert got["price"] == pytest.approx(float((0.5 * torch.log1p(a) - 0.5 * a / (1 + a)).sum(-1).mean()), rel=1e-10)
    with pytest.raises(ValueError, match="no injective output layer"):
        head_information(make(LSTMVAE), x)


@pytest.mark.parametrize("latent_in_lstm", [False, True])
def test_without_z_in_the_lstm_the_head_carries_all_the_fisher_information(latent_in_lstm):
    """latent_in_lstm=False: the decoder states ignore z, so the Fisher information of the whole decoder (scores
    through every path, by autograd) is head_information's; with z in the LSTM too it is not."""
    model = make(LIDSVAE, seed=3, scale=0.3, latent_in_lstm=latent_in_lstm)
    x = batch(random_sentences(4, seed=6), extra_pad=1)
    z = model.posterior(x).mean.detach()
    total = []
    for i in range(x.shape[0]):
        n = int(sentence_lengths(x[i : i + 1]))

        def log_p(zi, i=i, n=n):
            return model.decoder.logits(x[i : i + 1, :n], zi.unsqueeze(0))[0].log_softmax(-1)

        scores = torch.autograd.functional.jacobian(log_p, z[i])  # (n, V, K), through the LSTM as well
        total.append(torch.einsum("ty,tyk,tyk->", log_p(z[i]).exp(), scores, scores))
    gap = (head_information(model, x)["per_sentence"] - torch.stack(total).detach()).abs().max()
    assert (gap < 1e-10) if not latent_in_lstm else (gap > 1e-3)
    if not latent_in_lstm:
        assert model.decoder.latent_to_state is None and model.decoder.lstm.input_size == E
        assert_valid_layout(model.greedy(torch.randn(3, K, dtype=F64)))
        with pytest.raises(ValueError, match="leaves z nowhere to go"):
            LSTMVAE(V, K, E, H, latent_in_lstm=False)


# ---------------------------------------------------------------------------------------------- (2) plain Pyro


def test_user_written_svi_trains_lidsvae_beside_an_lstmvae():
    pyro.set_rng_seed(0)
    x = batch(random_sentences(16, seed=1))
    lid = LIDSVAE(V, latent_dim=K, embed_dim=E, hidden_dim=H)
    plain = LSTMVAE(V, latent_dim=K, embed_dim=E, hidden_dim=H)
    svi = SVI(lid.model, lid.guide, Adam({"lr": 1e-2}), Trace_ELBO())
    other = SVI(plain.model, plain.guide, Adam({"lr": 1e-2}), Trace_ELBO())
    losses = []
    for _ in range(120):
        losses.append(svi.step(x))
        other.step(x)
    assert all(math.isfinite(v) for v in losses)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.6 * first, (first, last)
    assert {lid.param_store_name, plain.param_store_name} == {"vae", "vae_1"}  # side by side, both train


# ---------------------------------------------------------------------------------------------- (3) padding


@pytest.mark.parametrize("cls", MODELS + [LSTMLanguageModel])
def test_padding_does_not_leak_into_log_probabilities(cls):
    kwargs = {} if cls is LSTMLanguageModel else {"latent_dim": K}
    torch.manual_seed(0)
    model = cls(V, embed_dim=E, hidden_dim=H, **kwargs).double().eval()
    sentences = random_sentences(5, low=1, high=7, seed=2)
    x = batch(sentences, extra_pad=2)  # and two all-<pad> columns
    alone = [batch([s]) for s in sentences]
    if cls is LSTMLanguageModel:
        padded = model.log_prob(x)
        single = torch.cat([model.log_prob(a) for a in alone])
        assert (padded - single).abs().max() < 1e-6
        return
    z = torch.randn(4, len(sentences), K, dtype=F64)  # (S, B, K)
    padded = model.log_joint(x, z)
    assert padded.shape == (4, len(sentences))
    single = torch.stack([model.log_joint(a, z[:, i : i + 1]).squeeze(-1) for i, a in enumerate(alone)], -1)
    assert (padded - single).abs().max() < 1e-6
    likelihood = model.decoder(z).log_prob(x)
    broadcast = model.decoder(z[:1]).log_prob(x.expand(3, *x.shape))  # z (1, B, K) against x (3, B, T)
    assert broadcast.shape == (3, len(sentences)) and (broadcast - likelihood[:1]).abs().max() < 1e-12
    assert (likelihood - model.decoder(z).log_prob(x[:, : x.shape[1] - 2])).abs().max() == 0
    # the encoder reads each sentence up to its own </s>
    means = model.posterior(x).mean
    assert (means - torch.cat([model.posterior(a).mean for a in alone])).abs().max() < 1e-6
    assert sentence_lengths(x).tolist() == [len(s) + 1 for s in sentences]


# ---------------------------------------------------------------------------------------------- (4) word dropout


def test_word_dropout_only_in_training_and_never_on_bos_or_pad():
    model = make(LSTMVAE, word_dropout=0.5)
    x = batch(random_sentences(200, low=1, high=8, seed=3))
    inputs = x[:, :-1]
    model.train()
    torch.manual_seed(1)
    dropped = model.decoder.decoder_inputs(x)
    changed = dropped != inputs
    assert (dropped[changed] == UNK).all()
    assert not changed[(inputs == BOS) | (inputs == PAD)].any()
    words = (inputs != BOS) & (inputs != PAD) & (inputs != EOS)
    assert 0.4 < changed[words].float().mean() < 0.6
    model.eval()
    assert torch.equal(model.decoder.decoder_inputs(x), inputs)
    z = torch.randn(len(x), K, dtype=F64)
    reference = make(LSTMVAE, word_dropout=0.0)  # same seed, same weights
    assert torch.equal(model.decoder(z).log_prob(x), reference.decoder(z).log_prob(x))
    model.train()
    assert not torch.equal(model.decoder(z).log_prob(x), reference.decoder(z).log_prob(x))


# ---------------------------------------------------------------------------------------------- (5) decoding


@pytest.mark.parametrize("cls", MODELS)
def test_decoders_return_valid_sentences_and_beam_search_beats_greedy(cls):
    model = make(cls, scale=0.4, max_length=9)
    head = model.decoder.head
    with torch.no_grad():  # </s> less likely: sentences of several lengths, some closed at max_length
        (head.injective_map.offset if cls is LIDSVAE else head.linear.bias)[EOS] -= 2.0
    pyro.set_rng_seed(0)
    # 12 latents, among them rows where a plain beam of 2 loses the greedy sentence (for both models)
    z = torch.cat([torch.randn(6, K, dtype=F64, generator=torch.Generator().manual_seed(seed)) for seed in (3, 4)])
    greedy = model.greedy(z)
    for tokens in [greedy, model.sample_text(z), model.sample_text(z, temperature=0.5, max_length=4),
                   model.beam_search(z, beam_size=3)]:  # fmt: skip
        assert_valid_layout(tokens, max_length=9)
        assert tokens.shape[0] == 12
    assert_valid_layout(model.greedy(z, max_length=2), 2)  # only room for </s>
    assert torch.equal(model.beam_search(z, beam_size=1), greedy)
    scores = model.decoder(z).log_prob
    for beam_size in (2, 5):
        assert (scores(model.beam_search(z, beam_size)) >= scores(greedy) - 1e-12).all()
    x = batch(random_sentences(4, seed=4))
    for mode, decoder in itertools.product(["mean", "sample"], ["greedy", "beam"]):
        out = model.reconstruct(x, mode=mode, decoder=decoder, beam_size=2)
        assert_valid_layout(out, 9)
        assert out.shape[0] == 4
    path = model.interpolate(x[0], x[1], steps=4)
    assert path.shape[0] == 4
    assert_valid_layout(path, 9)
    start = model.greedy(model.posterior(x[:1]).mean)[0]  # the path starts at x_a's posterior mean
    assert torch.equal(path[0, : len(start)], start) and (path[0, len(start) :] == PAD).all()
    assert model.interpolate(x[:2], x[2:], steps=3).shape[:2] == (3, 2)
    samples = model.decoder(z[:2]).sample((3,))
    assert samples.shape == (3, 2, 9)
    assert_valid_layout(samples[..., : int((samples != PAD).sum(-1).max())])


@pytest.mark.parametrize("cls", MODELS)
def test_decoding_refuses_bad_arguments_naming_them(cls):
    model = make(cls, max_length=6)
    z = torch.zeros(2, K, dtype=F64)
    for bad in (float("nan"), float("inf")):  # else: a silent '<s> </s>' or a row without </s>
        for decode in (model.greedy, model.sample_text, lambda z: model.beam_search(z, 2)):
            with pytest.raises(ValueError, match=r"finite z; got 1 NaN or infinite entries of 9"):
                decode(torch.cat([z, torch.tensor([[bad, 0.0, 0.0]], dtype=F64)]))
    for temperature in (0, -1.0, float("inf"), float("nan"), "1", True, torch.ones(2)):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            model.sample_text(z, temperature=temperature)
    for temperature in (np.float32(0.5), torch.tensor(0.5), 2):  # numbers of other kinds are fine
        assert_valid_layout(model.sample_text(z, temperature=temperature))
    for beam_size in (0, 1.5, True):
        with pytest.raises(ValueError, match="beam_size must be an integer >= 1"):
            model.beam_search(z, beam_size)
    for max_length in (1, 3.0):
        with pytest.raises(ValueError, match=r"max_length must be an integer >= 2"):
            model.greedy(z, max_length)
    with pytest.raises(ValueError, match=rf"decodes z of shape \(\.\.\., {K}\), got \(2, {K + 1}\)"):
        model.greedy(torch.zeros(2, K + 1, dtype=F64))
    x = batch(random_sentences(2, seed=1))
    with pytest.raises(ValueError, match="decoder must be 'greedy' or 'beam', got 'sampled'"):
        model.reconstruct(x, decoder="sampled")
    with pytest.raises(ValueError, match="steps must be an integer >= 2"):
        model.interpolate(x[0], x[1], steps=1)


def test_beam_search_with_a_wide_beam_is_exact():
    """V = 6 (choosable: </s>, <unk> and 2 words), max_length 5: 40 sentences, all in a beam of 64."""
    pyro.set_rng_seed(3)
    model = LIDSVAE(6, latent_dim=2, embed_dim=4, hidden_dim=5).double()
    svi = SVI(model.model, model.guide, Adam({"lr": 0.05}), Trace_ELBO())
    data = batch([[4, 5], [5, 4], [4, 4, 5], [5, 5], [4, 5, 5], [5, 4, 4]])
    for _ in range(100):  # a decoder whose </s> depends on the prefix: the most probable sentence is not ""
        svi.step(data)
    model.eval()
    sentences = [list(w) for n in range(4) for w in itertools.product([UNK, 4, 5], repeat=n)]
    assert len(sentences) == 40
    candidates = batch(sentences)
    z = 1.5 * torch.randn(12, 2, dtype=F64)
    lengths, greedy_misses = set(), 0
    for i in range(12):
        scores = model.decoder(z[i : i + 1]).log_prob(candidates)
        best = candidates[scores.argmax()]
        tokens, score = model.decoder.beam_search(z[i : i + 1], 1, 64, 5)
        assert torch.equal(tokens[0], best[: tokens.shape[1]]) and (best[tokens.shape[1] :] == PAD).all()
        assert abs(score.item() - scores.max().item()) < 1e-10
        lengths.add(tokens.shape[1])
        greedy_misses += not torch.equal(model.greedy(z[i : i + 1])[0], tokens[0])
    assert len(lengths) > 1 and greedy_misses > 0  # the search had something to find


# ---------------------------------------------------------------------------------------------- (6) data checks


@pytest.mark.parametrize("cls", MODELS + [LSTMLanguageModel])
def test_check_data_names_the_problem(cls):
    model = cls(V, embed_dim=E, hidden_dim=H, **({} if cls is LSTMLanguageModel else {"latent_dim": K}))
    x = batch([[4, 5], [6]])
    assert torch.equal(model.check_data(batch([[4, 5], [6]], extra_pad=3)), x)  # all-<pad> columns trimmed
    assert model.check_data(x.int()).dtype == torch.long
    with pytest.raises(ValueError, match="integer token ids"):
        model.check_data(x.float())
    with pytest.raises(ValueError, match=r"\[0, 12\).*\[0, 12\]"):
        model.check_data(torch.where(x == 6, V, x))
    with pytest.raises(ValueError, match=r"\[-1, 5\]"):
        model.check_data(torch.where(x == 6, -1, x))
    with pytest.raises(ValueError, match=r"start with <s>.*rows \[1\]"):
        model.check_data(torch.cat([x[:1], x[1:].roll(-1, 1)]))
    with pytest.raises(ValueError, match="end with </s>"):
        model.check_data(torch.where(x == EOS, 7, x))
    with pytest.raises(ValueError, match="<pad> inside"):
        model.check_data(torch.tensor([[BOS, 4, PAD, 5, EOS]]))
    # two sentences run together in one row would be scored as one
    with pytest.raises(ValueError, match=r"<s> \(id 1\) may only open a row; rows \[1\]"):
        model.check_data(torch.tensor([[BOS, 4, 5, EOS, PAD, PAD], [BOS, 5, EOS, BOS, 6, EOS]]))
    with pytest.raises(ValueError, match=r"</s> \(id 2\) may only close a row; rows \[0\]"):
        model.check_data(torch.tensor([[BOS, 5, EOS, 6, EOS]]))
    with pytest.raises(ValueError, match=r"\(batch, length\)"):
        model.check_data(x[0])


# ---------------------------------------------------------------------------------------------- (7) fit


def test_fit_trains_a_sequence_model_and_diagnostics_run():
    from pyro_lid.diagnostics import importance_weighted_log_likelihood
    from pyro_lid.infer import fit

    train, val = batch(random_sentences(24, seed=5)), batch(random_sentences(8, seed=6))
    model = LIDSVAE(V, latent_dim=K, embed_dim=E, hidden_dim=H, word_dropout=0.2)
    history = fit(model, train, val, epochs=1, batch_size=8, dynamic_binarization=False, progress=False)
    assert len(history) == 1 and math.isfinite(history["train_loss"][0]) and math.isfinite(history["val_loss"][0])
    ll = importance_weighted_log_likelihood(model.eval(), val, num_samples=6, chunk_size=4)
    assert ll.shape == (8,) and torch.isfinite(ll).all() and (ll < 0).all()
    lm = LSTMLanguageModel(V, embed_dim=E, hidden_dim=H)
    history = fit(lm, train, val, epochs=2, batch_size=8, progress=False, val_metrics=False, lr=1e-2)
    assert history["val_loss"][1] < history["val_loss"][0]
    assert abs(history["val_loss"][1] + lm.eval().log_prob(val).mean().item()) < 1e-4  # the NLL per sentence


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_bag_of_words_encoder_adds_the_summed_word_vectors_to_the_lstm_state_and_starts_as_the_plain_one(cls):
    x = batch(random_sentences(5, seed=3), extra_pad=2)
    plain, bow = make(cls, seed=4), make(cls, seed=4, bag_of_words=True)
    assert torch.equal(plain.encoder(x)[0], bow.encoder(x)[0])  # zero-initialized: the same encoder at the start
    with torch.no_grad():
        bow.encoder.body.word_counts.weight.normal_()
    vectors = bow.encoder.body.word_counts.weight
    counts = torch.zeros(x.shape[0], V, dtype=torch.float64).scatter_add_(1, x, torch.ones_like(x, dtype=torch.float64))
    counts[:, PAD] = 0.0  # padding is no word
    state = plain.encoder.body(x) + counts @ vectors
    loc, scale = bow.encoder(x)
    assert torch.allclose(loc, bow.encoder.loc(state), atol=1e-12)
    assert torch.allclose(scale, torch.nn.functional.softplus(bow.encoder.scale(state)) + 1e-4, atol=1e-12)
    # only the words a sentence has receive gradient through the counts
    bow.encoder(x[:1])[0].sum().backward()
    has_grad = bow.encoder.body.word_counts.weight.grad.abs().sum(-1) > 0
    assert has_grad.tolist() == [bool(c) for c in (counts[0] > 0).tolist()]

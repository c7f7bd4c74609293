"""Named methods: a model class plus a training recipe, with defaults from the original papers.

``METHODS[name].build(data_dim, latent_dim, ...)`` makes the model with the shared
architecture (same encoder and decoder widths for every method), and
``METHODS[name].fit_options(epochs)`` is what :func:`pyro_lid.infer.fit` adds for it
within a budget of ``epochs``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch

from .._checks import is_positive_number
from ..infer.checkpoints import config_differences, describe_model
from ..infer.engine.learning_rates import resolve_lr_multipliers
from ..infer.schedules import KLSchedule
from ..models import BNLSTMVAE, BNVAE, GMVAE, ILLIDVAE, LIDGMVAE, LIDSVAE, LIDVAE, LSTMVAE, SAVAE, VAE
from ..models.savae import SemiAmortized, semi_amortized

__all__ = [
    "BUILT",
    "Method",
    "METHODS",
    "TEXT_METHODS",
    "file_stem",
    "recipe_differences",
    "recipes",
    "resolve_method",
    "resolve_text_method",
    "text_version",
    "with_recipe",
]


@dataclass(frozen=True)
class Method:
    """A named way to train a VAE-type model."""

    model_class: type
    model_kwargs: dict = field(default_factory=dict)
    fit_kwargs: dict = field(default_factory=dict)
    reference: str = ""
    pretrain_fraction: float = 0.0  # share of the epochs spent as an autoencoder (Li et al.)

    def fit_options(self, epochs: int) -> dict:
        """Keyword arguments for :func:`~pyro_lid.infer.fit` in a budget of ``epochs`` epochs."""
        options = dict(self.fit_kwargs)
        if self.pretrain_fraction:
            if epochs < 2:
                raise ValueError("autoencoder pretraining needs a budget of at least 2 epochs")
            options["pretrain_epochs"] = min(epochs - 1, max(1, round(self.pretrain_fraction * epochs)))
        schedule = options.get("kl_schedule")
        if isinstance(schedule, KLSchedule):  # after pretraining the schedule starts again: fitted to what is left
            options["kl_schedule"] = _fit_to_budget(schedule, epochs - options.get("pretrain_epochs", 0))
        return options

    def recipe(self, epochs: int, text: bool = False, model=None) -> dict:
        """What trains this method within ``epochs``, as plain JSON values: the model class, its options (``text``:
        those of its :func:`text_version`) and :meth:`fit_options`; with ``model`` (the model as built for the
        run) also ``built``, its :func:`~pyro_lid.infer.checkpoints.describe_model` with ``modules``: the scalar
        settings of the model and of every submodule (``decoder.injective_map.margin``), the classes' defaults
        included, and its parameters' names and shapes. A comparison records it with each row and refuses to
        reuse a finished row whose method has changed since (a registry update, or a changed default of a model
        class), instead of mixing two recipes under one name (:func:`recipe_differences`). (``fit``'s own
        defaults are not part of it.)"""
        model_class, model_kwargs = text_version(self) if text else (self.model_class, self.model_kwargs)
        recipe = {"model": model_class.__name__, "model_kwargs": model_kwargs, "fit": self.fit_options(epochs)}
        if model is not None:
            recipe[BUILT] = describe_model(model, modules=True)
        return json.loads(json.dumps(recipe, default=_plain))

    def build(
        self,
        data_dim: int,
        latent_dim: int,
        hidden: int = 512,
        icnn_hidden: int = 512,
        num_components: int = 10,
        train_data: torch.Tensor | None = None,
    ):
        """The model, with encoder/decoder widths shared across methods.

        One option is a statistic of the training split ``train_data`` (``(N, D)`` in [0, 1]), which the caller
        passes here: ``metric="bernoulli"`` (``lidvae:metric=bernoulli``) becomes the decoder's ``metric``, the
        pixels' Fisher weights (:func:`~pyro_lid.data.pixel_fisher_weights`); the other value is ``"euclidean"``,
        the default. The option ``icnn_depth`` (default 2, ``lidvae:inner=brenier:icnn_depth=3``) is the number of
        hidden layers of every ICNN potential, each ``icnn_hidden`` wide.
        """
        from ..data.images import pixel_fisher_weights

        if self.is_text:
            raise ValueError(f"{self.model_class.__name__} is a text model: build it with build_text")
        kwargs = dict(hidden_dims=(hidden, hidden), **self.model_kwargs)
        metric = kwargs.pop("metric", "euclidean")
        if metric not in ("euclidean", "bernoulli"):
            raise ValueError(f"metric must be 'euclidean' or 'bernoulli', got {metric!r}")
        if metric == "bernoulli":
            if train_data is None:
                raise ValueError("metric='bernoulli' needs the training split's train_data")
            kwargs["metric"] = pixel_fisher_weights(train_data)
        if issubclass(self.model_class, GMVAE):
            kwargs["num_components"] = num_components
        depth = kwargs.pop("icnn_depth", 2)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"icnn_depth must be an integer >= 1, got {depth!r}")
        if issubclass(self.model_class, (LIDVAE, LIDGMVAE)):
            kwargs["icnn_hidden_dims"] = (icnn_hidden,) * depth
        elif "icnn_depth" in self.model_kwargs:
            raise ValueError(f"icnn_depth: {self.model_class.__name__} has no ICNN potential")
        return self.model_class(data_dim, latent_dim, **kwargs)

    @property
    def is_text(self) -> bool:
        """Whether the recipe's model is a sequence model (``lstm_vae``, ``lidsvae``)."""
        return issubclass(self.model_class, LSTMVAE)

    def build_text(
        self,
        vocab_size: int,
        latent_dim: int = 32,
        embed_dim: int = 256,
        hidden_dim: int = 256,
        word_dropout: float = 0.0,
        max_length: int = 100,
        train_tokens: torch.Tensor | None = None,
    ):
        """The recipe's text version (see :func:`text_version`): VAE -> :class:`~pyro_lid.models.LSTMVAE`,
        LIDVAE and its variants -> :class:`~pyro_lid.models.LIDSVAE`; the fit options stay the recipe's.

        Two LIDSVAE options are statistics of the training split ``train_tokens`` (``(N, T)``), which the caller
        passes here: ``metric="unigram"`` (``lidsvae:metric=unigram``) becomes ``word_frequencies``
        (:func:`~pyro_lid.data.unigram_frequencies`; the other value is ``"euclidean"``, the default) and
        ``subspace="topics"`` (``lidsvae:subspace=topics``) becomes ``subspace``, the corpus's
        :func:`~pyro_lid.data.topic_directions` (the other value is ``"random"``, the default).
        """
        from ..data.text import topic_directions, unigram_frequencies

        model_class, kwargs = text_version(self)
        metric = kwargs.pop("metric", "euclidean")
        subspace = kwargs.pop("subspace", "random")
        if metric not in ("euclidean", "unigram"):
            raise ValueError(f"metric must be 'euclidean' or 'unigram', got {metric!r}")
        if subspace not in ("random", "topics"):
            raise ValueError(f"subspace must be 'random' or 'topics', got {subspace!r}")
        if (metric, subspace) != ("euclidean", "random") and train_tokens is None:
            raise ValueError(f"metric={metric!r}, subspace={subspace!r} need the training split's train_tokens")
        if metric == "unigram":
            kwargs["word_frequencies"] = unigram_frequencies(train_tokens, vocab_size)
        if subspace == "topics":
            kwargs["subspace"] = topic_directions(train_tokens, vocab_size, latent_dim)
        return model_class(vocab_size, latent_dim, embed_dim, hidden_dim, word_dropout, max_length=max_length,
                           **kwargs)  # fmt: skip


def _plain(value):
    """A JSON-able stand-in for an option's value: a class's name, a tensor's numbers, an object's public
    attributes (a :class:`~pyro_lid.infer.KLSchedule`'s kind, lengths and start), else its ``repr``."""
    if isinstance(value, type):
        return value.__name__
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "__dict__"):
        return {"class": type(value).__name__, **{k: v for k, v in vars(value).items() if not k.startswith("_")}}
    return repr(value)


def _fit_to_budget(schedule: KLSchedule, epochs: int) -> KLSchedule:
    """The recipe's KL schedule, shortened where the budget is short: the weight reaches 1 (a warm-up
    ends, a cycle's ramp completes) within the first half of the ``epochs``, so the model is trained on
    the full ELBO before it is evaluated on it. Budgets of twice the recipe's lengths or more keep the recipe."""
    half = epochs / 2
    length = {"linear": schedule.warmup_epochs, "cyclical": schedule.cycle_epochs}.get(schedule.kind, 0.0)
    if length <= half:
        return schedule
    return KLSchedule(schedule.kind, min(schedule.warmup_epochs, half), schedule.start,
                      min(schedule.cycle_epochs, half), schedule.ramp_fraction)  # fmt: skip


METHODS = {
    "vae": Method(VAE, reference="Kingma & Welling 2014"),
    "beta_vae": Method(VAE, {"beta": 0.2}, reference="Higgins et al. 2017 (beta < 1 as in Wang et al. 2021)"),
    "anneal": Method(
        VAE,
        fit_kwargs={"kl_schedule": KLSchedule("linear", warmup_epochs=5)},
        reference="Bowman et al. 2016: KL weight 0 -> 1 linearly over the first 5 epochs",
    ),
    "cyclical": Method(
        VAE,
        fit_kwargs={"kl_schedule": KLSchedule("cyclical", cycle_epochs=5, ramp_fraction=0.5)},
        reference="Fu et al. 2019: cycles of 5 epochs, ramp over the first half (R = 0.5)",
    ),
    "free_bits": Method(
        VAE, fit_kwargs={"free_bits": 0.1}, reference="Kingma et al. 2016: per-dimension KL floor lambda = 0.1 nats"
    ),
    "li_et_al": Method(
        VAE,
        fit_kwargs={
            "free_bits": 0.1,
            "free_bits_per_point": True,
            "kl_schedule": KLSchedule("linear", warmup_epochs=10),
        },
        pretrain_fraction=0.3,
        reference="Li et al. 2019: autoencoder pretraining (the first 30% of the epochs), decoder reset, then a KL "
        "warm-up from 0 over 10 epochs (their recipe; fitted to a short budget) with free bits lambda = 0.1 on "
        "each data point's KL of each dimension (their code's --fb 2; Kingma et al. floor the batch mean)",
    ),
    "lagging": Method(
        VAE,
        fit_kwargs={"strategy": "lagging", "kl_schedule": KLSchedule("linear", warmup_epochs=10, start=0.1)},
        reference="He et al. 2019: aggressive encoder steps (checked every 15, at most 100) until "
        "validation MI stops rising, with their KL warm-up from 0.1 to 1 over 10 epochs (fitted to a short budget)",
    ),
    "sa_vae": Method(
        SAVAE,
        {"refine_steps": 10, "refine_lr": 0.1, "end_to_end": True},
        fit_kwargs={"kl_schedule": KLSchedule("linear", warmup_epochs=10, start=0.1)},
        reference="Kim et al. 2018: the encoder trained end to end through 10 refinement steps of size 0.1 on "
        "each point's ELBO (clipped at norm 5; theirs: 20 steps, lr 1, momentum 0.5 on the batch mean, and the "
        "decoder also through the steps; their step count, momentum and decoder path, with their lr and clip "
        "taken per point at batch 32: sa_vae:refine_steps=20:refine_lr=0.03125:refine_max_norm=28:"
        "refine_momentum=0.5:decoder_through_steps=true, still in log sigma, clipped jointly), their KL warm-up "
        "from 0.1 over 10 epochs (fitted to a short budget); LL uses the refined posterior",
    ),
    "bn_vae": Method(BNVAE, {"gamma": 0.5}, reference="Zhu et al. 2020: fixed batch-norm scale gamma = 0.5"),
    "lidvae": Method(
        LIDVAE,
        reference="LIDVAE with pyro-lid's default decoder: s * z (s >= 2) in a fixed random K-dimensional "
        "subspace, the VAE's MLP outside it (chosen by the fidelity study)",
    ),
    "lidvae_brenier": Method(
        LIDVAE, {"construction": "brenier"}, reference="Wang, Blei & Cunningham 2021: grad psi_D o pad o grad psi_K"
    ),
    "il_lidvae": Method(
        ILLIDVAE, {"strong_convexity": 0.5}, reference="Kinoshita et al. 2023: strong-convexity constant L = 0.5"
    ),
    "gmvae": Method(GMVAE, reference="Dilokthanakul et al. 2016 (mixture summed out exactly)"),
    "lidgmvae": Method(
        LIDGMVAE,
        reference="LIDGMVAE with pyro-lid's default decoder (as lidvae, at margin 3) and the k-means start of the "
        "mixture",
    ),
    "lidgmvae_brenier": Method(
        LIDGMVAE, {"construction": "brenier"}, reference="Wang, Blei & Cunningham 2021 (the paper's decoder)"
    ),
    "lidvae_projection": Method(
        LIDVAE,
        {"construction": "projection", "margin": 1.0},
        reference="LIDVAE with the projected injective decoder at margin 1: s * z (s >= 1) in a fixed random "
        "K-dimensional subspace, the VAE's MLP outside it (the fidelity study's first setting)",
    ),
    "lidgmvae_projection": Method(
        LIDGMVAE,
        {"construction": "projection", "margin": 1.0},
        reference="LIDGMVAE with the projected injective decoder (as lidvae_projection)",
    ),
}


def _parse_value(text: str):
    """``"3"`` -> 3, ``"0.5"`` -> 0.5, ``"true"``/``"false"`` -> bool, anything else the string."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


#: Model options a variant may not set, and why: they change how a method runs, not what it computes, so they
#: are no part of its name or recipe (a run may be resumed with or without them).
_NOT_A_METHOD = {
    "refine_checkpoint": "it changes memory and time, not the numbers; pass compare/study --refine-checkpoint "
    "(refine_checkpoint=True of run_text_comparison/run_image_comparison)",
}


def refines_end_to_end(method: Method) -> bool:
    """Whether ``method``'s model is semi-amortized and differentiates through its refinement (SA-VAE), known
    from the registry before any model is built (what ``--refine-checkpoint`` applies to)."""
    import inspect

    if not issubclass(method.model_class, SemiAmortized):
        return False
    default = inspect.signature(method.model_class).parameters.get("end_to_end")  # the class's own default
    value = method.model_kwargs.get("end_to_end", False if default is None else default.default)
    return value is True or (not isinstance(value, bool) and value == 1)


def resolve_method(spec: str) -> Method:
    """The method a name or a variant names: ``"lidvae_projection"``, or ``"lidvae_projection:margin=3"``
    (``name:key=value[:key=value...]``), which overrides the named method's model options (and its ``fit``
    options, for the keys of ``_FIT_OPTIONS``: ``lidvae:inner=brenier:potential_lr=0.3``).

    ``recipe=R`` trains the named model by the training recipe ``R`` of :func:`recipes` (:func:`with_recipe`):
    ``lidsvae:recipe=lagging``, ``lidvae:recipe=sa_vae:margin=3``; the other options apply on top of it.

    A variant lets a study sweep a lever (a margin, an inner map) without a registry entry per value;
    the spec is the row's name in every results file, so the setting is never lost.
    """
    name, *assignments = spec.split(":")
    if name not in METHODS:
        raise ValueError(f"unknown model {name!r} in {spec!r}; choose from {sorted(METHODS)}")
    method = METHODS[name]
    overrides, fit_overrides, parts = {}, {}, []
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise ValueError(f"{spec!r}: expected name:key=value[:key=value...], got the part {assignment!r}")
        parts.append((key, value))
    named = [value for key, value in parts if key == "recipe"]
    if len(named) > 1:
        raise ValueError(f"{spec!r}: one recipe at a time, got recipe={', recipe='.join(named)}")
    if named:
        try:
            method = with_recipe(method, named[0])
        except ValueError as error:
            raise ValueError(f"{spec!r}: {error}") from error
    for key, value in parts:
        if key == "recipe":
            continue
        if key in _NOT_A_METHOD:
            raise ValueError(f"{spec!r}: {key} is not part of a method: {_NOT_A_METHOD[key]}")
        if key in _FIT_OPTIONS:
            try:
                fit_overrides.update(_FIT_OPTIONS[key](_parse_value(value)))
            except ValueError as error:
                raise ValueError(f"{spec!r}: {error}") from error
        else:
            overrides[key] = _parse_value(value)
    if not assignments:
        return method
    options = [a for a, (key, _) in zip(assignments, parts) if key != "recipe"]
    reference = f"{method.reference} [with {', '.join(options)}]" if options else method.reference
    variant = Method(method.model_class, {**method.model_kwargs, **overrides}, {**method.fit_kwargs, **fit_overrides},
                     reference, method.pretrain_fraction)  # fmt: skip
    try:  # a misspelt option fails here, before any model trains
        if variant.is_text:
            variant.build_text(8, 2, 4, 4, train_tokens=_TINY_CORPUS)
        else:
            tiny = variant.build(4, 2, hidden=4, icnn_hidden=4, num_components=2, train_data=_TINY_IMAGES)
            resolve_lr_multipliers(tiny, variant.fit_kwargs.get("lr_multipliers"))
    except (TypeError, ValueError) as error:
        what = f"{name} trained by recipe={named[0]}" if named else name  # the recipe may be what does not fit
        raise ValueError(f"{spec!r}: {what} does not take these options ({error})") from error
    return variant


#: The models a training recipe trains: the plain VAE, and SA-VAE's semi-amortized one (the recipe's refinement).
_RECIPE_MODELS = (VAE, SAVAE)


def recipes() -> list[str]:
    """The registry's training recipes: the methods that train the plain VAE (KL schedules, free bits, Li et al.,
    Lagging, beta) or refine its posteriors (SA-VAE) rather than change its model, so that they apply to any model
    (:func:`with_recipe`)."""
    return sorted(n for n, m in METHODS.items() if m.model_class in _RECIPE_MODELS)


def with_recipe(model: Method, recipe: str) -> Method:
    """``model``'s model trained by the registry's training recipe ``recipe`` (one of :func:`recipes`): the
    recipe's ``fit`` options and autoencoder pretraining added to the model's, its model options (``beta``, the
    refinement's) to the model's, and for SA-VAE the model made semi-amortized (``semi_amortized(M)``).

    :raises ValueError: for a name that is no training recipe (a model: ``bn_vae``, ``lidvae``, ...), a
        semi-amortized model refined twice, or an option both set to different values (neither is taken silently).
    """
    if recipe not in METHODS:
        raise ValueError(f"unknown recipe {recipe!r}; recipes: {recipes()}")
    trained = METHODS[recipe]
    if trained.model_class not in _RECIPE_MODELS:
        raise ValueError(f"{recipe} is a model ({trained.model_class.__name__}), not a training recipe of the VAE; "
                         f"recipes: {recipes()}")  # fmt: skip
    model_class = model.model_class
    if trained.model_class is SAVAE:
        if issubclass(model_class, SemiAmortized):
            raise ValueError(f"{model_class.__name__} is semi-amortized already: its posteriors are refined once")
        model_class = semi_amortized(model_class)

    def merged(what: str, own: dict, added: dict) -> dict:  # values compared as the recipe records them
        clash = sorted(k for k in set(own) & set(added) if _recorded(own[k]) != _recorded(added[k]))
        if clash:
            raise ValueError(f"the model and the recipe {recipe} set the {what} {', '.join(clash)} differently")
        return {**own, **added}

    if model.pretrain_fraction and trained.pretrain_fraction and model.pretrain_fraction != trained.pretrain_fraction:
        raise ValueError(f"the model and the recipe {recipe} pretrain for different shares of the epochs")
    return Method(model_class, merged("model options", model.model_kwargs, trained.model_kwargs),
                  merged("fit options", model.fit_kwargs, trained.fit_kwargs),
                  f"{model.reference}; trained by the recipe of {recipe} ({trained.reference})",
                  model.pretrain_fraction or trained.pretrain_fraction)  # fmt: skip


def _recorded(value) -> str:
    """``value`` as a recipe records it (plain JSON), so that two equal KL schedules compare equal."""
    return json.dumps(value, default=_plain, sort_keys=True)


def _positive_number(name: str, unit: str, value) -> float:
    if not is_positive_number(value):
        raise ValueError(f"{name} must be a number of {unit} > 0, got {value!r}")
    return float(value)


def _warmup(epochs) -> dict:
    return {"kl_schedule": KLSchedule("linear", warmup_epochs=_positive_number("warmup", "epochs", epochs))}


def _free_bits(floor) -> dict:
    return {"free_bits": _positive_number("free_bits", "nats", floor)}


#: Variant options that are ``fit`` options, not model options, so that a recipe combines with any model:
#: ``potential_lr=m`` trains every Brenier potential (the ICNNs of the decoder, ``decoder.*.potential.*``) at ``m``
#: times the learning rate of the other parameters; ``warmup=E`` weighs the KL term by min(1, t / E) at epoch t
#: (``anneal``'s schedule, fitted to the budget as anneal's is: ``lidsvae:warmup=5``); ``free_bits=λ`` floors each
#: dimension's KL at λ nats (``free_bits``'s objective: ``lidvae:free_bits=0.1``).
_FIT_OPTIONS = {"potential_lr": lambda m: {"lr_multipliers": {"decoder.*.potential.*": m}}, "warmup": _warmup,
                "free_bits": _free_bits}  # fmt: skip


#: 16 sentences of two words over ids 4-7 (vocabulary 8), each word 8 times: enough corpus for ``resolve_method``
#: to build a text variant whose options are corpus statistics (``metric=unigram``, ``subspace=topics``).
_TINY_CORPUS = torch.tensor([[1, 4 + i % 4, 4 + (i // 4 + i) % 4, 2] for i in range(16)])


#: Four 4-pixel binary images: enough data for ``resolve_method`` to build an image variant whose options are
#: statistics of the training split (``metric=bernoulli``).
_TINY_IMAGES = torch.tensor([[1.0, 0, 1, 0], [0, 1, 1, 0], [1, 1, 0, 1], [0, 0, 1, 1]])


#: The recipe's entry that describes the built model; rows recorded before it existed lack it.
BUILT = "built"


def recipe_differences(recorded: dict, current: dict) -> list:
    """``(key, recorded value, current value)`` for each difference between two :meth:`Method.recipe` values. The
    built model (:data:`BUILT`) is compared only where both recipes describe it: a row recorded before recipes
    described it is checked on the rest."""
    if BUILT not in recorded or BUILT not in current:
        recorded = {k: v for k, v in recorded.items() if k != BUILT}
        current = {k: v for k, v in current.items() if k != BUILT}
    return list(config_differences(recorded, current))


def file_stem(spec: str) -> str:
    """A method spec as a portable file-name part: ``lidvae_projection:margin=3`` -> ``lidvae_projection-margin=3``."""
    return spec.replace(":", "-")


# ---------------------------------------------------------------------------------------------- text
#: Each image model class's text version, and how its options carry over (``None``: dropped, the text
#: model has no such lever; the projected output layer of LIDSVAE is a ``construction="projection"`` already).
_REFINE = {k: k for k in ("refine_steps", "refine_lr", "refine_samples", "end_to_end", "refine_max_norm",
                          "refine_momentum", "decoder_through_steps")}  # fmt: skip
_TEXT_VERSIONS = {
    VAE: (LSTMVAE, {"beta": "beta"}),
    BNVAE: (BNLSTMVAE, {"beta": "beta", "gamma": "gamma"}),
    LIDVAE: (LIDSVAE, {"beta": "beta", "margin": "margin", "inner": "inner", "construction": None,
                       "learn_subspace": "learn_subspace"}),
}  # fmt: skip


def text_version(method: Method, name: str | None = None) -> tuple[type, dict]:
    """The text model class and its options for ``method``: VAE -> :class:`~pyro_lid.models.LSTMVAE`,
    BN-VAE -> :class:`~pyro_lid.models.BNLSTMVAE`; LIDVAE, IL-LIDVAE and the projected LIDVAE ->
    :class:`~pyro_lid.models.LIDSVAE` (``beta``, ``margin`` and ``inner`` carried over; IL-LIDVAE's
    strong-convexity constant becomes the margin of a Brenier inner map); a semi-amortized model
    (``semi_amortized(M)``) -> the semi-amortized text version of ``M``'s, with the refinement's options: SA-VAE ->
    :class:`~pyro_lid.models.SALSTMVAE`, ``lidvae:recipe=sa_vae`` -> :class:`~pyro_lid.models.SALIDSVAE`.

    :raises ValueError: (one line, naming the method) for what has no text version yet (mixture priors), a
        semi-amortized class of its own (not ``semi_amortized(M)``), or an option the text model lacks.
    """
    try:
        return _text_version(method, name)
    except _NoTextVersion as error:  # the list is added here: TEXT_METHODS is itself read off _text_version
        raise ValueError(f"{error}; text methods: {', '.join(sorted(TEXT_METHODS))}") from None


class _NoTextVersion(ValueError):
    """A model class with no text version (the message lacks the list of those with one)."""


def _text_version(method: Method, name: str | None) -> tuple[type, dict]:
    cls, kwargs = method.model_class, dict(method.model_kwargs)
    if issubclass(cls, LSTMVAE):
        return cls, kwargs
    name = name or next((n for n, m in METHODS.items() if m is method), cls.__name__)
    if issubclass(cls, SemiAmortized):  # the text version of its base, refined alike
        base = next(b for b in cls.__mro__[1:] if issubclass(b, VAE) and not issubclass(b, SemiAmortized))
        if semi_amortized(base) is not cls:  # a class with behaviour of its own: not to be taken for another
            raise ValueError(f"{name} ({cls.__name__}) is a semi-amortized class of its own, not semi_amortized("
                             f"{base.__name__}): it has no text version")  # fmt: skip
        refinement = {k: kwargs.pop(k) for k in list(kwargs) if k in _REFINE}
        target, options = _text_version(Method(base, kwargs), name)
        return semi_amortized(target), {**options, **refinement}
    if issubclass(cls, LIDVAE):
        target, table = _TEXT_VERSIONS[LIDVAE]
        if issubclass(cls, ILLIDVAE):  # the inverse-Lipschitz constant is the floor of the inner map's Jacobian
            kwargs.setdefault("inner", "brenier")
            kwargs["margin"] = kwargs.pop("strong_convexity", 0.5)
    elif cls in _TEXT_VERSIONS:
        target, table = _TEXT_VERSIONS[cls]
    else:
        raise _NoTextVersion(f"{name} ({cls.__name__}) has no text version yet")
    unknown = sorted(set(kwargs) - set(table))
    if unknown:
        raise ValueError(f"{name}: the text model {target.__name__} has no option {', '.join(unknown)}")
    return target, {table[k]: v for k, v in kwargs.items() if table[k] is not None}


METHODS["lstm_vae"] = Method(LSTMVAE, reference="Bowman et al. 2016; He et al. 2019: the text version of vae")
METHODS["lidsvae"] = Method(
    LIDSVAE,
    reference="LIDSVAE: the LSTM-VAE with an output layer injective in z (margin 1), the text version of lidvae",
)


def _has_text_version(method: Method) -> bool:
    try:
        _text_version(method, None)
    except ValueError:
        return False
    return True


#: The registered names whose recipe applies to text (``build_text`` works), read off :func:`text_version`:
#: the text models and every recipe over VAE, SA-VAE, BN-VAE or LIDVAE (KL schedules, free bits, Li et al.,
#: Lagging, IL-, projected LIDVAE).
TEXT_METHODS = tuple(n for n, m in METHODS.items() if _has_text_version(m))


def resolve_text_method(spec: str) -> Method:
    """:func:`resolve_method` for text: also refuses (``ValueError`` naming ``spec``) a recipe with no text version."""
    method = resolve_method(spec)
    text_version(method, spec)
    return method

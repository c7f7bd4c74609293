"""Models: VAEs (plain and latent-identifiable; Gaussian or mixture prior; LSTM for text), classical demonstrations."""

from .mixture_weight import MixtureWeightModel
from .networks import GaussianEncoder, MLPLikelihood
from .ppca import PPCA
from .priors import GaussianMixturePrior, StandardNormalPrior, kmeans
from .savae import SAVAE, SemiAmortized, semi_amortized
from .sequence import BNLSTMVAE, LIDSVAE, LSTMVAE, SALIDSVAE, SALSTMVAE, LSTMLanguageModel, SequenceCategorical
from .vae import BNVAE, GMVAE, ILLIDVAE, LIDGMVAE, LIDVAE, VAE, BatchNormalized, cluster_accuracy

#: The mixture-prior LIDVAE under the name the issue also uses (LIDMVAE = :class:`LIDGMVAE`).
LIDMVAE = LIDGMVAE

__all__ = [
    "BNLSTMVAE",
    "BNVAE",
    "BatchNormalized",
    "GMVAE",
    "ILLIDVAE",
    "LIDGMVAE",
    "LIDMVAE",
    "LIDSVAE",
    "LIDVAE",
    "LSTMLanguageModel",
    "LSTMVAE",
    "VAE",
    "GaussianEncoder",
    "GaussianMixturePrior",
    "kmeans",
    "MLPLikelihood",
    "MixtureWeightModel",
    "PPCA",
    "SALIDSVAE",
    "SALSTMVAE",
    "SAVAE",
    "SemiAmortized",
    "SequenceCategorical",
    "StandardNormalPrior",
    "cluster_accuracy",
    "semi_amortized",
]

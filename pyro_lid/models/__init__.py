"""Models: VAEs (plain and latent-identifiable, Gaussian or mixture prior) and classical demonstrations."""

from .mixture_weight import MixtureWeightModel
from .networks import GaussianEncoder, MLPLikelihood
from .ppca import PPCA
from .priors import GaussianMixturePrior, StandardNormalPrior, kmeans
from .savae import SAVAE, SemiAmortized, semi_amortized
from .vae import BNVAE, GMVAE, ILLIDVAE, LIDGMVAE, LIDVAE, VAE, cluster_accuracy

__all__ = [
    "BNVAE",
    "GMVAE",
    "ILLIDVAE",
    "LIDGMVAE",
    "LIDVAE",
    "VAE",
    "GaussianEncoder",
    "GaussianMixturePrior",
    "kmeans",
    "MLPLikelihood",
    "MixtureWeightModel",
    "PPCA",
    "SAVAE",
    "SemiAmortized",
    "StandardNormalPrior",
    "cluster_accuracy",
    "semi_amortized",
]

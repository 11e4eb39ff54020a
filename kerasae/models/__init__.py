"""Model families: one class each; `kerasae.families` names them and says what each can do."""

from kerasae.models.autoencoder import Autoencoder, DenoisingAutoencoder
from kerasae.models.betatcvae import BetaTCVAE
from kerasae.models.cvae import CVAE
from kerasae.models.hvae import HVAE
from kerasae.models.iwae import IWAE
from kerasae.models.rae import RAE
from kerasae.models.regularized import ContractiveAutoencoder, SparseAutoencoder
from kerasae.models.vae import VAE
from kerasae.models.vqvae import VQVAE
from kerasae.models.wae import WAE

__all__ = [
    "Autoencoder",
    "DenoisingAutoencoder",
    "SparseAutoencoder",
    "ContractiveAutoencoder",
    "VAE",
    "IWAE",
    "HVAE",
    "CVAE",
    "BetaTCVAE",
    "WAE",
    "RAE",
    "VQVAE",
]

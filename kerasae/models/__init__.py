"""Model families: one class each, found by name through `FAMILIES`."""

from kerasae.models.autoencoder import Autoencoder, DenoisingAutoencoder
from kerasae.models.cvae import CVAE
from kerasae.models.iwae import IWAE
from kerasae.models.regularized import ContractiveAutoencoder, SparseAutoencoder
from kerasae.models.vae import VAE

# The registry: recipe `model.family` -> class.
FAMILIES = {
    "ae": Autoencoder,
    "dae": DenoisingAutoencoder,
    "sparse_ae": SparseAutoencoder,
    "contractive_ae": ContractiveAutoencoder,
    "vae": VAE,
    "iwae": IWAE,
    "cvae": CVAE,
}

__all__ = [
    "Autoencoder",
    "DenoisingAutoencoder",
    "SparseAutoencoder",
    "ContractiveAutoencoder",
    "VAE",
    "IWAE",
    "CVAE",
    "FAMILIES",
]

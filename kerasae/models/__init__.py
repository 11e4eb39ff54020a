"""Model families: one class each, found by name through `FAMILIES`."""

from kerasae.models.autoencoder import Autoencoder, DenoisingAutoencoder
from kerasae.models.vae import VAE

# The registry: recipe `model.family` -> class.
FAMILIES = {
    "ae": Autoencoder,
    "dae": DenoisingAutoencoder,
    "vae": VAE,
}

__all__ = ["Autoencoder", "DenoisingAutoencoder", "VAE", "FAMILIES"]

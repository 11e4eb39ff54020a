"""kerasae: declarative YAML recipes for autoencoders on Keras 3.

`import kerasae` registers every model and layer class with Keras, so that
`keras.saving.load_model("zoo/<entry>/model.keras")` restores kerasae models.
"""

import os

# TensorFlow's C++ start-up chatter drowns the progress bar; a user's own setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kerasae.errors import DataError, KerasaeError, RecipeError, ZooError
from kerasae.layers import Corruption, DynamicBinarization, Sampling
from kerasae.models import FAMILIES, VAE, Autoencoder, DenoisingAutoencoder
from kerasae.zoo import load

__version__ = "0.1.0"

__all__ = [
    "Autoencoder", "DenoisingAutoencoder", "VAE", "FAMILIES",
    "Sampling", "Corruption", "DynamicBinarization",
    "KerasaeError", "RecipeError", "DataError", "ZooError",
    "load", "__version__",
]

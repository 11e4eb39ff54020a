"""kerasae: declarative YAML recipes for autoencoders on Keras 3.

`import kerasae` registers every model and layer class with Keras, so that
`keras.saving.load_model("zoo/<entry>/model.keras")` restores kerasae models.
"""

import contextlib
import os

# TensorFlow's C++ start-up chatter drowns the progress bar; a user's own setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def _quiet_native_stderr():
    """Hides what native code writes to stderr while Keras imports its backend.

    TensorFlow logs CUDA and oneDNN notices through absl before TF_CPP_MIN_LOG_LEVEL
    takes effect; TF_CPP_MIN_LOG_LEVEL=0 shows them again.
    """
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        yield
        return
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


with _quiet_native_stderr():
    import keras  # noqa: F401 -- imports the backend (and TensorFlow) quietly

from kerasae.errors import DataError, KerasaeError, RecipeError, ZooError
from kerasae.layers import Corruption, DynamicBinarization, Sampling
from kerasae.models import (
    CVAE, FAMILIES, IWAE, VAE, Autoencoder, ContractiveAutoencoder, DenoisingAutoencoder, SparseAutoencoder,
)
from kerasae.zoo import load

__version__ = "0.1.0"

__all__ = [
    "Autoencoder", "DenoisingAutoencoder", "SparseAutoencoder", "ContractiveAutoencoder",
    "VAE", "IWAE", "CVAE", "FAMILIES",
    "Sampling", "Corruption", "DynamicBinarization",
    "KerasaeError", "RecipeError", "DataError", "ZooError",
    "load", "__version__",
]

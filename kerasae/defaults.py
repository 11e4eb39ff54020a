"""Defaults that more than one module needs, each held once here.

The recipe schema holds the defaults of its own keys; what lives here is shared by the
schema and by code that also runs without a recipe (a model built from Python, a reloaded
zoo entry).
"""

# The seed's denoising criterion: zero a random 20% of the pixels (Vincent et al. 2008).
MASKING_P = 0.2
# Gaussian corruption's standard deviation when a recipe names none.
GAUSSIAN_SIGMA = 0.2
# What a denoising family corrupts with when its recipe names no corruption.
DENOISING_CORRUPTION = {"kind": "masking", "p": MASKING_P}

# Training steps per compiled call on TensorFlow and JAX (recipe `train.steps_per_execution`).
STEPS_PER_EXECUTION = 32

# Images per call of the numpy conveniences (encode, decode, reconstruct) and, at most, per
# validation batch: a forward pass's call overhead dominates small batches.
PREDICT_BATCH = 1024

# The anomaly threshold: this quantile of the scores of held-out normal items (recipe `score`).
THRESHOLD_QUANTILE = 0.99
# Importance samples per item of the "elbo" and "nll" anomaly scores.
SCORE_SAMPLES = 16

# The most epochs a recipe may ask for (train.epochs, loss.kl_warmup_epochs, outputs.epochs).
MAX_EPOCHS = 100_000

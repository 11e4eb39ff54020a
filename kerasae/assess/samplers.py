"""Samplers of codes to decode: how every family generates, not only those with a prior.

`prior`: N(0, I), for the generative families (trained towards it: VAE, IWAE, CVAE, WAE).
`gmm`: a Gaussian mixture fitted to the codes of the training images after training
(scikit-learn), as Ghosh et al. (2020) do for the RAE and pythae for every model: a plain AE
generates too, and a VAE's samples often improve on its prior's. An entry keeps its fitted
mixture as plain arrays (`zoo.SAMPLER_FILE`, no pickle); an entry written before samplers
existed gets one fitted, and saved, on first use.
"""

import os

import numpy as np

from kerasae import data
from kerasae.spec import recipe
from kerasae.store import zoo

SAMPLERS = ("prior", "gmm")
GMM_COMPONENTS = 10
GMM_IMAGES = 10_000  # training images whose codes the mixture is fitted to


FULL_COVARIANCE_UNITS = 64  # wider codes get diagonal covariances (see fit_gmm)


def fit_gmm(codes, components=GMM_COMPONENTS, seed=0):
    """A Gaussian mixture fitted to codes, as a dict of arrays.

    Covariances are full for codes of up to `FULL_COVARIANCE_UNITS` units and diagonal for wider
    ones (a VQ-VAE's 7 x 7 grid of 16-d vectors is 784 units): ten full 784 x 784 covariances would
    be ~3 M parameters from 10,000 codes, and a 49 MB `sampler.npz`.
    """
    from sklearn.mixture import GaussianMixture

    codes = np.asarray(codes, dtype="float64").reshape(len(codes), -1)
    gmm = GaussianMixture(
        n_components=max(1, min(components, len(codes) // 2)),
        covariance_type="full" if codes.shape[1] <= FULL_COVARIANCE_UNITS else "diag",
        reg_covar=1e-5,
        random_state=seed,
    ).fit(codes)
    return {
        "weights": gmm.weights_,
        "means": gmm.means_,
        "covariances": gmm.covariances_,  # (components, units, units) full, (components, units) diagonal
        "images": np.asarray(len(codes)),
    }


def sample_gmm(params, n, seed=None):
    """n codes drawn from a fitted mixture (`fit_gmm`), float32."""
    rng = np.random.default_rng(seed)
    weights = np.asarray(params["weights"], dtype="float64")
    means, covariances = params["means"], params["covariances"]
    component = rng.choice(len(weights), size=n, p=weights / weights.sum())
    noise = rng.standard_normal((n, means.shape[1]))
    codes = means[component]
    for k in np.unique(component):  # one factor per component, never one per code
        rows = component == k
        if covariances.ndim == 3:
            codes[rows] += noise[rows] @ np.linalg.cholesky(covariances[k]).T
        else:
            codes[rows] += noise[rows] * np.sqrt(covariances[k])
    return codes.astype("float32")


def fit_to_model(model, dataset, images=GMM_IMAGES):
    """The mixture of a model's codes of (up to `images`) training images."""
    n = min(images, len(dataset.x_train))
    labels = None if dataset.y_train is None else dataset.y_train[:n]
    return fit_gmm(model.encode(np.asarray(dataset.x_train[:n]), labels))


def save(path, params):
    """Writes a fitted sampler atomically."""
    zoo.write_arrays(path, params)


def load(path):
    """A fitted sampler written by `save`."""
    with np.load(path, allow_pickle=False) as saved:
        return {key: saved[key] for key in saved.files}


def for_entry(entry, model):
    """The entry's fitted mixture: its `zoo.SAMPLER_FILE`, else fitted now on the entry's recipe's
    training data and saved there."""
    path = os.path.join(entry, zoo.SAMPLER_FILE)
    if os.path.isfile(path):
        return load(path)
    spec = recipe.load(os.path.join(entry, zoo.RECIPE_FILE))
    params = fit_to_model(model, data.load(spec.data, seed=spec.train.seed))
    save(path, params)
    return params


def draw(model, sampler, n, seed=None, params=None):
    """n codes from a sampler: "prior" (the model must be generative) or "gmm" (`params` fitted)."""
    if sampler == "prior":
        if not model.generative:
            raise ValueError(f"a {type(model).__name__} has no prior; sample it with the gmm sampler")
        return model.prior_sample(n, seed)
    return sample_gmm(params, n, seed)

"""Test-set metrics for a trained model, in stated units (nats per image unless named): what
`kerasae.assess.metric_table` lists, computed from a model and its data (no files read or written).

Every family: reconstruction BCE and squared error per image, PSNR, the PCA
baseline with as many components as the code has units, and a linear probe
(logistic regression on the codes). The linear AE adds its principal angles to
the PCA subspace; the DAE its denoising gain; variational families the test
ELBO and its terms and an importance-sampled negative log-likelihood; a VQ-VAE its
code use. Every family: the number of active code units and, on MNIST, the FID of
its samples for each sampler (`kerasae.assess.fid`). On image patches: how many first-layer
filters are edge-like (`kerasae.assess.filters`).
"""

import functools
import math
import time

import numpy as np
from keras import ops

from kerasae import anomaly, likelihood, losses
from kerasae.assess import fid, filters, metric_table
from kerasae.data import series
from kerasae.likelihood import ImportanceLogWeights, decoded_values, images_per_batch, test_batch  # noqa: F401 -- kerasae.assess.evaluate's names

EPS = 1e-7
PROBE_TRAIN_IMAGES = 10_000
PCA_TRAIN_IMAGES = 60_000  # at most this many training images for a memory-mapped set
ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al.: Cov_x(E_q[z_u]) > 0.01


def _per_image(values):
    return values.reshape(len(values), -1).sum(axis=1)


def in_unit_range(x):
    """Whether images are pixel values in [0, 1] (whitened patches are not)."""
    return bool(x.min() >= 0.0 and x.max() <= 1.0)


def reconstruction_metrics(target, output):
    """Squared error summed per image, averaged over images; for images in [0, 1] also the BCE (nats)
    and the PSNR (dB, peak 1), which mean nothing for other values."""
    sse = _per_image((target - output) ** 2)
    if not in_unit_range(target):
        return {"sse": float(sse.mean())}
    p = np.clip(output, EPS, 1.0 - EPS)
    bce = -_per_image(target * np.log(p) + (1.0 - target) * np.log(1.0 - p))
    pixels = target[0].size
    psnr = 10.0 * np.log10(1.0 / np.maximum(sse / pixels, 1e-12))
    return {"bce": float(bce.mean()), "sse": float(sse.mean()), "psnr_db": float(psnr.mean())}


def pca_baseline(x_train, x_test, n_components):
    """PCA with the code's size, fit on the training images: the baseline an AE must beat."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=min(n_components, x_train[0].size, len(x_train)), svd_solver="randomized", random_state=0)
    pca.fit(x_train.reshape(len(x_train), -1))
    restored = pca.inverse_transform(pca.transform(x_test.reshape(len(x_test), -1))).reshape(x_test.shape)
    clipped = np.clip(restored, 0.0, 1.0) if in_unit_range(x_test) else restored
    return reconstruction_metrics(x_test, clipped) | {
        "sse_unclipped": float(_per_image((x_test - restored) ** 2).mean()),
        "components": int(pca.n_components_),
    }, pca


def linear_probe(codes_train, y_train, codes_test, y_test):
    """Test accuracy of a logistic regression on the codes (the "feature discovery" measure)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    probe.fit(codes_train, y_train)
    return float(probe.score(codes_test, y_test))


def principal_angles(model, pca):
    """Degrees between the span of a linear AE's decoder weights and the PCA subspace."""
    from scipy.linalg import subspace_angles

    weights = ops.convert_to_numpy(model.decoder.get_layer("logits").kernel).T
    return [float(a) for a in np.degrees(subspace_angles(weights, pca.components_.T))]


def is_linear_autoencoder(model):
    """Whether a model is the seed's linear AE (no hidden layer, linear code and output): its
    decoder then spans the PCA subspace, which `principal_angles` measures."""
    return (
        not model.variational
        and not model.encoder_layers
        and model.latent_activation == "linear"
        and model.output_activation == "linear"
    )


def importance_sampled_nll(model, x, y=None, k=1000, chunk=100, batch_size=None):
    """-log p(x) ~ -log (1/k) sum_i p(x, z_i) / q(z_i | x), nats per image averaged over the images
    (Burda et al.), with memory flat in k and in the number of images (`kerasae.likelihood`)."""
    _, log_px = likelihood.bounds(model, model.model_inputs(x, y), len(x), k, chunk, batch_size)
    return float(-log_px.mean())


def evaluate(model, dataset, nll_samples=1000, probe=True, sampler=None, fid_samples=fid.SAMPLES):
    """Every metric of the metric table (`kerasae.assess.metric_table`) that applies, on the test split.

    Args:
        model: a trained kerasae model.
        dataset: the `Dataset` it was trained on.
        nll_samples: importance samples per image for the NLL of variational
            families (0 skips it).
        probe: fit the linear probe when the data has labels.
        sampler: the model's fitted gmm sampler (`kerasae.assess.samplers`): with it, the FID of its
            samples and of its prior's, on MNIST (`kerasae.assess.fid`).
        fid_samples: images generated per sampler for the FID (0 skips it).
    """
    start = time.perf_counter()
    evaluation = Evaluation(model, dataset, nll_samples, probe, sampler, fid_samples)
    out = {"units": "nats per image (bce, elbo, nll); sum of squared errors per image (sse); dB (psnr)"}
    for metric in metric_table.METRICS:
        if metric.applies(evaluation):
            out[metric.key] = metric.compute(evaluation)
    out["seconds"] = round(time.perf_counter() - start, 2)
    return out


class Evaluation:
    """A model and its test data, and what the metrics share, each computed once when first asked for."""

    def __init__(self, model, dataset, nll_samples=1000, probe=True, sampler=None, fid_samples=fid.SAMPLES):
        self.model, self.dataset = model, dataset
        self.nll_samples, self.probe, self.sampler, self.fid_samples = nll_samples, probe, sampler, fid_samples
        self.x_test, self.y_test = dataset.x_test, dataset.y_test
        x_train = dataset.x_train
        if not isinstance(x_train, np.ndarray):  # memory-mapped: PCA and probe fit on a sample read in
            x_train = x_train[: min(len(x_train), PCA_TRAIN_IMAGES)]
        self.x_train = x_train

    @functools.cached_property
    def reconstruction(self):
        return reconstruction_metrics(self.x_test, self.model.reconstruct(self.x_test, self.y_test))

    @functools.cached_property
    def _pca(self):
        return pca_baseline(self.x_train, self.x_test, self.model.latent_dim)

    @property
    def pca_metrics(self):
        return self._pca[0]

    @functools.cached_property
    def codes_test(self):
        return self.model.encode(self.x_test, self.y_test)

    @property
    def active_units(self):
        """Burda et al.'s active units, Cov_x(E_q[z_u]) > 0.01, of the code `encode` gives (the
        posterior mean of a variational family)."""
        return int((self.codes_test.var(axis=0) > ACTIVE_UNIT_THRESHOLD).sum())

    @property
    def code_units(self):
        return int(self.codes_test.shape[1])

    @functools.cached_property
    def probes(self):
        """(accuracy of a linear probe on the codes, on the PCA codes), or None without two classes
        to tell apart (a tiny or filtered data set may hold one)."""
        y_train, n = self.dataset.y_train, min(len(self.x_train), PROBE_TRAIN_IMAGES)
        if not self.probe or y_train is None or self.y_test is None or len(np.unique(y_train[:n])) < 2:
            return None
        x_train, pca = self.x_train[:n], self._pca[1]
        codes_train = self.model.encode(x_train, y_train[:n])
        flat_test = self.x_test.reshape(len(self.x_test), -1)
        return (
            linear_probe(codes_train, y_train[:n], self.codes_test, self.y_test),
            linear_probe(pca.transform(x_train.reshape(n, -1)), y_train[:n], pca.transform(flat_test), self.y_test),
        )

    @functools.cached_property
    def elbo_terms(self):
        """The test ELBO and its terms, from the model's own test step (an IWAE's decodes k samples per image)."""
        model = self.model
        terms = model.evaluate(
            *model.inputs_for(self.x_test, self.y_test), batch_size=test_batch(model), verbose=0, return_dict=True
        )
        return {**terms, "elbo": -(terms["reconstruction_loss"] + terms["kl_loss"])}

    @functools.cached_property
    def nll(self):
        return importance_sampled_nll(self.model, self.x_test, self.y_test, k=self.nll_samples)

    @property
    def bits_per_dim(self):
        return bits_per_dim(self.nll, self.model)

    @functools.cached_property
    def code_metrics(self):
        return self.model.code_metrics(self.x_test, self.y_test)

    @property
    def fid_applies(self):
        return bool(self.sampler is not None and self.fid_samples) and fid.applies(
            self.model.image_shape, self.dataset.record
        )

    @property
    def fid(self):
        return fid.sample_fids(self.model, self.sampler, n=self.fid_samples)

    @property
    def is_linear_autoencoder(self):
        return is_linear_autoencoder(self.model)

    @property
    def principal_angles(self):
        return principal_angles(self.model, self._pca[1])

    @property
    def denoising(self):
        """Squared errors of corrupted test images and of their restorations, and the gain in dB."""
        x = self.x_test
        noisy = self.model.corrupt(x)
        noisy_error = float(_per_image((noisy - x) ** 2).mean())
        output_error = float(_per_image((self.model.reconstruct(noisy, self.y_test) - x) ** 2).mean())
        return {
            "noisy_input_sse": noisy_error,
            "output_sse": output_error,
            "gain_db": float(10.0 * np.log10(noisy_error / max(output_error, 1e-12))),
        }

    @property
    def filters(self):
        _, kernel, tile = filters.first_layer_kernel(self.model, self.model.image_shape)
        return filters.edge_like(filters.tiles(kernel, tile))

    @property
    def anomaly(self):
        """How the scores flag the test items (with known anomalies: how well they find them); a
        series' scores per time step too."""
        model, dataset = self.model, self.dataset
        found = {}
        if model.threshold is not None or dataset.anomalous is not None:
            found = anomaly.summary(model, model.score(self.x_test, self.y_test), dataset.anomalous)
        if dataset.series is not None:
            found["steps"] = series.summary(model, dataset.series)
        return found


def bits_per_dim(nll, model):
    """An NLL in nats per image as bits per dimension of 8-bit images. The bernoulli and the
    discretized logistic give probabilities already; a gaussian density over values k / 255 gives a
    bin of width 1 / 255 the probability density * width, so -log P = nll + D log 255."""
    dims = math.prod(model.image_shape)
    nats = nll + (dims * math.log(losses.BINS) if model.likelihood == "gaussian" else 0.0)
    return nats / (dims * math.log(2.0))

"""Test-set metrics for a trained model, in stated units (nats per image unless named).

Every family: reconstruction BCE and squared error per image, PSNR, the PCA
baseline with as many components as the code has units, and a linear probe
(logistic regression on the codes). The linear AE adds its principal angles to
the PCA subspace; the DAE its denoising gain; variational families the test
ELBO and its terms and an importance-sampled negative log-likelihood; a VQ-VAE its
code use. Every family: the number of active code units and, on MNIST, the FID of
its samples for each sampler (`kerasae.fid`). On image patches: how many first-layer
filters are edge-like (`kerasae.filters`).
"""

import math
import os
import time

import numpy as np
from keras import ops

from kerasae import (
    anomaly,
    backend,
    builder,
    cards,
    data,
    fid,
    filters,
    likelihood,
    losses,
    recipe,
    samplers,
    series,
    zoo,
)
from kerasae.likelihood import ImportanceLogWeights, decoded_values, images_per_batch  # noqa: F401 -- kerasae.evaluate's names

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
    """All metrics that apply to the model's family, on the test split.

    Args:
        model: a trained kerasae model.
        dataset: the `Dataset` it was trained on.
        nll_samples: importance samples per image for the NLL of variational
            families (0 skips it).
        probe: fit the linear probe when the data has labels.
        sampler: the model's fitted gmm sampler (`kerasae.samplers`): with it, the FID of its
            samples and of its prior's, on MNIST (`kerasae.fid`).
        fid_samples: images generated per sampler for the FID (0 skips it).
    """
    start = time.perf_counter()
    x_train, x_test, y_test = dataset.x_train, dataset.x_test, dataset.y_test
    if not isinstance(x_train, np.ndarray):  # memory-mapped: PCA and probe fit on a sample read in
        x_train = x_train[: min(len(x_train), PCA_TRAIN_IMAGES)]
    labels = y_test if model.needs_labels else None
    out = {"units": "nats per image (bce, elbo, nll); sum of squared errors per image (sse); dB (psnr)"}
    out["reconstruction"] = reconstruction_metrics(x_test, model.reconstruct(x_test, labels))
    out["pca"], pca = pca_baseline(x_train, x_test, model.latent_dim)
    out["beats_pca"] = out["reconstruction"]["sse"] < out["pca"]["sse"]
    n = min(len(x_train), PROBE_TRAIN_IMAGES)
    # A probe needs two classes to tell apart (a tiny or filtered data set may hold one).
    codes_test = model.encode(x_test, labels)
    # Burda et al.'s active units, Cov_x(E_q[z_u]) > 0.01, of the code `encode` gives (the
    # posterior mean of a variational family).
    out["active_units"] = int((codes_test.var(axis=0) > ACTIVE_UNIT_THRESHOLD).sum())
    out["code_units"] = int(codes_test.shape[1])
    if probe and dataset.y_train is not None and y_test is not None and len(np.unique(dataset.y_train[:n])) > 1:
        train_labels = dataset.y_train[:n] if model.needs_labels else None
        codes_train = model.encode(x_train[:n], train_labels)
        out["probe_accuracy"] = linear_probe(codes_train, dataset.y_train[:n], codes_test, y_test)
        out["pca_probe_accuracy"] = linear_probe(
            pca.transform(x_train[:n].reshape(n, -1)),
            dataset.y_train[:n],
            pca.transform(x_test.reshape(len(x_test), -1)),
            y_test,
        )
    if is_linear_autoencoder(model):
        out["principal_angles_deg"] = principal_angles(model, pca)
    if model.corruption is not None:
        out["denoising"] = _denoising(model, x_test, labels)
    if model.variational:
        out.update(_variational(model, x_test, labels, nll_samples))
    if model.threshold is not None or dataset.anomalous is not None:  # entries from before thresholds have none
        out["anomaly"] = anomaly.summary(model, model.score(x_test, labels), dataset.anomalous)
    if dataset.series is not None:  # a series: scores per time step too
        out.setdefault("anomaly", {})["steps"] = series.summary(model, dataset.series)
    out.update(model.code_metrics(x_test, labels))
    if dataset.record["name"] == "patches":
        _, kernel, tile = filters.first_layer_kernel(model, model.image_shape)
        out["filters"] = filters.edge_like(filters.tiles(kernel, tile))
    if sampler is not None and fid_samples and fid.applies(model.image_shape, dataset.record):
        out["fid"] = fid.sample_fids(model, sampler, n=fid_samples)
    out["seconds"] = round(time.perf_counter() - start, 2)
    return out


def _denoising(model, x, labels):
    """Squared errors of corrupted test images and of their restorations, and the gain in dB."""
    noisy = model.corrupt(x)
    noisy_error = float(_per_image((noisy - x) ** 2).mean())
    output_error = float(_per_image((model.reconstruct(noisy, labels) - x) ** 2).mean())
    return {
        "noisy_input_sse": noisy_error,
        "output_sse": output_error,
        "gain_db": float(10.0 * np.log10(noisy_error / max(output_error, 1e-12))),
    }


def _variational(model, x, y, nll_samples):
    inputs = (x, y) if model.needs_labels else (x,)
    # An IWAE's test step decodes k samples per image.
    terms = model.evaluate(*inputs, batch_size=images_per_batch(model, model.k), verbose=0, return_dict=True)
    out = {
        "elbo": -(terms["reconstruction_loss"] + terms["kl_loss"]),
        "elbo_reconstruction": terms["reconstruction_loss"],
        "elbo_kl": terms["kl_loss"],
    }
    if nll_samples:
        out["nll"] = importance_sampled_nll(model, x, y, k=nll_samples)
        out["nll_samples"] = nll_samples
        if model.image_shape[-1] == 3:  # colour images: the literature's unit
            out["nll_bits_per_dim"] = bits_per_dim(out["nll"], model)
    return out


def bits_per_dim(nll, model):
    """An NLL in nats per image as bits per dimension of 8-bit images. The bernoulli and the
    discretized logistic give probabilities already; a gaussian density over values k / 255 gives a
    bin of width 1 / 255 the probability density * width, so -log P = nll + D log 255."""
    dims = math.prod(model.image_shape)
    nats = nll + (dims * math.log(losses.BINS) if model.likelihood == "gaussian" else 0.0)
    return nats / (dims * math.log(2.0))


def evaluate_entry(entry, nll_samples=None, keep_nll=False):
    """Re-evaluates a zoo entry on its recipe's test data; updates metrics.json and the cards.

    Args:
        entry: the entry's folder.
        nll_samples: importance samples per image for the NLL (default: the recipe's).
        keep_nll: skip the NLL and keep the stored one (the rest is re-evaluated).

    Returns:
        The entry's metrics with a fresh "evaluation" section.
    """
    model = zoo.load(entry)
    spec = recipe.load(os.path.join(entry, zoo.RECIPE_FILE))
    metrics = zoo.read_metrics(entry)
    dataset = data.load(spec.data, seed=spec.train.seed)
    # Compiled as when it was trained: the random draws of XLA and of TensorFlow's kernels differ.
    jit = backend.jit_compile(
        spec.train.jit_compile, distributed=spec.distribute.strategy != "none", conv=spec.model.conv
    )
    model.compile(optimizer=builder.optimizer(spec.train), jit_compile=jit)
    samples = 0 if keep_nll else spec.outputs.nll_samples if nll_samples is None else nll_samples
    sampler = samplers.for_entry(entry, model)
    stored = metrics.get("evaluation", {})
    metrics["evaluation"] = evaluate(
        model, dataset, nll_samples=samples, sampler=sampler, fid_samples=spec.outputs.fid_samples
    )
    if keep_nll:
        metrics["evaluation"].update({key: stored[key] for key in ("nll", "nll_samples") if key in stored})
    zoo.write_metrics(entry, metrics)
    cards.entry_card(entry, spec.to_dict(), metrics)
    cards.zoo_table(os.path.dirname(os.path.abspath(entry)))
    return metrics

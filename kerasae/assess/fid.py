"""Sample quality as a Fréchet distance (FID) on the features of a small MNIST classifier.

FID (Heusel et al. 2017) compares the mean and covariance of features of generated images with
those of real ones: ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)); 0 for identical
distributions. ImageNet's Inception features say little about 28 x 28 digits, so kerasae ships
its own feature extractor: a small convnet trained once on the MNIST training set
(`python -m kerasae.assess.fid`), its 128 penultimate units the features. The file it writes,
`kerasae/assets/fid_mnist.npz`, holds the classifier's weights, its test accuracy, the
features' statistics on the 10,000 MNIST test digits (the reference every sample set is
compared with) and the floor: the FID between the two halves of the test set, what real
digits score against real digits with 5,000 images a side. Nothing is downloaded.
"""

import os

import numpy as np

ASSET = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "fid_mnist.npz")
IMAGE_SHAPE = (28, 28, 1)
SAMPLES = 10_000  # generated images per FID, as many as the reference's test digits
_CACHE = {}


def build_classifier():
    """The feature extractor and classifier: (features model, classifier model), shared layers."""
    import keras

    image = keras.Input(IMAGE_SHAPE, name="image")
    h = keras.layers.Conv2D(32, 3, activation="relu", name="conv_0")(image)
    h = keras.layers.MaxPooling2D(name="pool_0")(h)
    h = keras.layers.Conv2D(64, 3, activation="relu", name="conv_1")(h)
    h = keras.layers.MaxPooling2D(name="pool_1")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    features = keras.layers.Dense(128, activation="relu", name="features")(h)
    logits = keras.layers.Dense(10, name="logits")(keras.layers.Dropout(0.3, seed=0)(features))
    return keras.Model(image, features, name="fid_features"), keras.Model(image, logits, name="fid_classifier")


def statistics(features):
    """(mean, covariance) of feature rows, float64."""
    features = np.asarray(features, dtype="float64")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(stats_a, stats_b):
    """The Fréchet distance between the Gaussians of two (mean, covariance) pairs.

    Tr((S_a S_b)^(1/2)) is computed as Tr((S_a^(1/2) S_b S_a^(1/2))^(1/2)), a symmetric matrix's
    eigenvalues: stable where a covariance is singular (features that never fire)."""
    (mu_a, cov_a), (mu_b, cov_b) = stats_a, stats_b
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0.0, None)).sum()
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * cross)


def _asset():
    if "asset" not in _CACHE:
        with np.load(ASSET, allow_pickle=False) as saved:
            _CACHE["asset"] = {key: saved[key] for key in saved.files}
    return _CACHE["asset"]


def features_model():
    """The shipped feature extractor, weights loaded (built once per process)."""
    if "model" not in _CACHE:
        asset = _asset()
        features, _ = build_classifier()
        weights = [asset[f"weight_{i}"] for i in range(int(asset["weights"]))]
        features.set_weights(weights[: len(features.weights)])
        _CACHE["model"] = features
    return _CACHE["model"]


def classify(images):
    """The shipped classifier's digit for each MNIST-shaped image in [0, 1] (a probe of what an
    image shows: the web page's tests ask it what a reconstruction of a drawing depicts)."""
    if "classifier" not in _CACHE:
        asset = _asset()
        _, classifier = build_classifier()
        classifier.set_weights([asset[f"weight_{i}"] for i in range(int(asset["weights"]))])
        _CACHE["classifier"] = classifier
    logits = _CACHE["classifier"].predict(np.asarray(images, dtype="float32"), verbose=0)
    return np.argmax(logits, axis=-1)


def features_of(images, batch_size=500):
    """The 128 features of MNIST-shaped images in [0, 1]."""
    return features_model().predict(np.asarray(images, dtype="float32"), batch_size=batch_size, verbose=0)


def reference():
    """What every FID here is measured against: the test digits' statistics, the floor, and the
    classifier's test accuracy."""
    asset = _asset()
    return {
        "stats": (asset["reference_mean"], asset["reference_cov"]),
        "floor": float(asset["floor"]),
        "classifier_accuracy": float(asset["accuracy"]),
    }


def fid(images):
    """FID of images against the MNIST test digits."""
    return frechet_distance(statistics(features_of(images)), reference()["stats"])


def applies(image_shape, data_record):
    """FID here is defined for MNIST-shaped images of MNIST (its features know digits only)."""
    return tuple(image_shape) == IMAGE_SHAPE and data_record.get("name", "").startswith("mnist")


def sample_fids(model, sampler_params, n=SAMPLES, seed=0):
    """{sampler: FID} of n images from each sampler the model has (prior where generative; gmm)."""
    from kerasae.assess import samplers

    out = {}
    for sampler in samplers.SAMPLERS:
        if sampler == "prior" and not model.generative:
            continue
        codes = samplers.draw(model, sampler, n, seed=seed, params=sampler_params)
        out[sampler] = fid(model.decode(codes, model.default_labels(n)))
    ref = reference()
    return {**out, "floor": ref["floor"], "samples": n, "classifier_accuracy": ref["classifier_accuracy"]}


def train_and_write(x_train, y_train, x_test, y_test, epochs=8, path=ASSET):
    """Trains the classifier on MNIST and writes the asset (`python -m kerasae.assess.fid`)."""
    import keras

    from kerasae.store import zoo

    keras.utils.set_random_seed(0)
    features, classifier = build_classifier()
    classifier.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    classifier.fit(x_train, y_train, batch_size=128, epochs=epochs, verbose=2)
    accuracy = classifier.evaluate(x_test, y_test, batch_size=500, verbose=0, return_dict=True)["accuracy"]
    test_features = features.predict(x_test, batch_size=500, verbose=0)
    order = np.random.default_rng(0).permutation(len(x_test))
    halves = order[: len(order) // 2], order[len(order) // 2 :]
    floor = frechet_distance(statistics(test_features[halves[0]]), statistics(test_features[halves[1]]))
    mean, cov = statistics(test_features)
    weights = {f"weight_{i}": w for i, w in enumerate(classifier.get_weights())}
    zoo.write_arrays(
        path,
        {
            **weights,
            "weights": np.asarray(len(weights)),
            "reference_mean": mean,
            "reference_cov": cov,
            "floor": np.asarray(floor),
            "accuracy": np.asarray(accuracy),
        },
    )
    return accuracy, floor


if __name__ == "__main__":
    from kerasae import data
    from kerasae.spec import recipe

    section = recipe.DataSection(dataset="mnist", binarize="none")
    d = data.load(section)
    x_train = np.concatenate([d.x_train, d.x_val])
    y_train = np.concatenate([d.y_train, d.y_val])
    accuracy, floor = train_and_write(x_train, y_train, d.x_test, d.y_test)
    print(f"wrote {ASSET}: test accuracy {accuracy:.4f}, real-vs-real FID floor {floor:.3f}")

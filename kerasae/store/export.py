"""Serving exports of a saved `.keras` model: a TensorFlow SavedModel and ONNX files.

Both run on the TensorFlow backend: on JAX and PyTorch `export` runs them in a TensorFlow
subprocess (`python -m kerasae.store.export`). Every endpoint takes images as float32
(batch, H, W, C) in [0, 1]; conditional families also take integer labels (batch,).
"""

import os
import subprocess
import sys

import keras

FORMATS = ("tf_saved_model", "onnx")
# ONNX holds one function per file: the reconstruction and the two halves; and, for an entry that
# scores by reconstruction (a deterministic score), its anomaly score.
ONNX_FILES = ("model.onnx", "encoder.onnx", "decoder.onnx")
SCORE_FILE = "score.onnx"


def score_network(model):
    """A functional model, image (and labels) -> each image's "reconstruction" anomaly score, to export."""
    image = keras.Input(shape=model.image_shape, name="image")
    labels = keras.Input(shape=(), dtype="int32", name="labels")  # an input only where the model takes labels
    return keras.Model(model.call_inputs(image, labels), model.reconstruction_score_tensor(image, labels), name="score")


def exports_score(model):
    """Whether the exports hold the anomaly score: a deterministic one, the reconstruction's (the ELBO
    and the NLL draw codes at random)."""
    return model.score_kind == "reconstruction"


def _load(model_path):
    import kerasae  # noqa: F401 -- registers the classes load_model needs

    return keras.saving.load_model(model_path)


def _specs(model):
    image = keras.InputSpec(shape=(None, *model.image_shape), dtype="float32", name="image")
    latent = keras.InputSpec(shape=(None, model.code_size), dtype="float32", name="z")
    labels = keras.InputSpec(shape=(None,), dtype="int32", name="labels")
    return image, latent, labels


def export_saved_model(model_path, out_dir):
    """Loads a `.keras` model and writes a SavedModel to `out_dir`.

    Signatures: `serve` (image -> reconstruction), `encode` (image -> latent
    code: the mean for variational families), `decode` (latent -> image) and, for a
    model scored by reconstruction, `score` (image -> anomaly score); each also takes
    integer labels for a conditional family.
    """
    model = _load(model_path)
    image, latent, labels = _specs(model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    # Each endpoint takes the image (or code), and its labels where the model takes them.
    endpoints = {
        "serve": (lambda *args: model(model.call_inputs(*args), training=False), _arguments(model, image, labels)),
        "encode": (model.encode_tensor, _arguments(model, image, labels)),
        "decode": (model.decode_tensor, _arguments(model, latent, labels)),
    }
    if exports_score(model):
        endpoints["score"] = (model.reconstruction_score_tensor, _arguments(model, image, labels))
    for name, (fn, signature) in endpoints.items():
        archive.add_endpoint(name, fn, input_signature=signature)
    # Keras 3.15 saves every weight twice: as the tracked Keras variables and as the
    # TensorFlow variables the endpoints capture. The endpoints need only the latter;
    # dropping the former halves the SavedModel (5.0 -> 2.6 MB for the seed's VAE).
    from kerasae.backend import private

    if private.available("keras.export.ExportArchive._tf_trackable"):
        for attribute in ("variables", "trainable_variables", "non_trainable_variables"):
            setattr(archive._tf_trackable, attribute, [])
    archive.write_out(str(out_dir), verbose=False)


def export_onnx(model_path, out_dir):
    """Loads a `.keras` model and writes `ONNX_FILES` to `out_dir` with Keras's `export`.

    - model.onnx: image (and labels) -> reconstruction;
    - encoder.onnx: the encoder network, image -> code, or (mean, log-variance)
      for variational families (a hierarchical VAE's top layer's, along the posterior
      means); a conditional encoder takes a second input, the one-hot label;
    - decoder.onnx: the decoder network, code -> image; a conditional decoder
      takes the code and the one-hot label joined into one vector;
    - score.onnx, for a model scored by reconstruction: image (and labels) -> anomaly score.
    """
    model = _load(model_path)
    image, latent, labels = _specs(model)
    os.makedirs(out_dir, exist_ok=True)
    condition = keras.InputSpec(shape=(None, model.condition_dim()), dtype="float32", name="condition")
    model.export(
        os.path.join(out_dir, "model.onnx"),
        format="onnx",
        verbose=False,
        input_signature=[model.call_inputs(image, labels)],
    )
    encoder, decoder = model.code_networks()
    encoder.export(
        os.path.join(out_dir, "encoder.onnx"),
        format="onnx",
        verbose=False,
        input_signature=[model.call_inputs(image, condition)],
    )
    decoder_in = keras.InputSpec(shape=(None, model.code_size + model.condition_dim()), dtype="float32", name="z")
    decoder.export(os.path.join(out_dir, "decoder.onnx"), format="onnx", verbose=False, input_signature=[decoder_in])
    if exports_score(model):
        score_network(model).export(
            os.path.join(out_dir, SCORE_FILE),
            format="onnx",
            verbose=False,
            input_signature=[model.call_inputs(image, labels)],
        )


def _arguments(model, *specs):
    """An endpoint's positional inputs: the first spec alone, or with the labels' when the model takes them."""
    inputs = model.call_inputs(*specs)
    return list(inputs) if isinstance(inputs, list) else [inputs]


EXPORTERS = {"tf_saved_model": export_saved_model, "onnx": export_onnx}


def export(format, model_path, out_dir):
    """Writes a serving export ("tf_saved_model" or "onnx") of a saved `.keras` model.

    Keras exports SavedModels and ONNX (through tf2onnx) from the TensorFlow backend (JAX and
    torch would need jax2tf or torch_xla), and the `.keras` file is backend-independent, so on
    other backends the export runs in a TensorFlow subprocess.

    Raises:
        RuntimeError: the export failed (its last line of output says why).
    """
    if keras.backend.backend() == "tensorflow":
        return EXPORTERS[format](model_path, out_dir)
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    command = [sys.executable, "-m", "kerasae.store.export", format, str(model_path), str(out_dir)]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"{format} export failed: {tail[0]}")


if __name__ == "__main__":
    export(*sys.argv[1:])

"""TensorFlow SavedModel export with reconstruction, encoder and decoder signatures.

Runs on the TensorFlow backend (see `backend.export_saved_model`).
"""

import keras


def export_saved_model(model_path, out_dir):
    """Loads a `.keras` model and writes a SavedModel to `out_dir`.

    Signatures: `serve` (image -> reconstruction), `encode` (image -> latent
    code: the mean for variational families) and `decode` (latent -> image);
    each also takes integer labels for a conditional family.
    """
    import kerasae  # noqa: F401 -- registers the classes load_model needs

    model = keras.saving.load_model(model_path)
    image = keras.InputSpec(shape=(None, *model.image_shape), dtype="float32")
    latent = keras.InputSpec(shape=(None, model.latent_dim), dtype="float32")
    archive = keras.export.ExportArchive()
    archive.track(model)
    if model.needs_labels:
        # Conditional families take integer labels beside images and codes.
        labels = keras.InputSpec(shape=(None,), dtype="int32")
        endpoints = {
            "serve": (lambda x, y: model([x, y], training=False), [image, labels]),
            "encode": (lambda x, y: model.encode_tensor(x, y), [image, labels]),
            "decode": (lambda z, y: model.decoder(model.decoder_inputs(z, y), training=False), [latent, labels]),
        }
    else:
        endpoints = {
            "serve": (lambda x: model(x, training=False), [image]),
            "encode": (lambda x: model.encode_tensor(x), [image]),
            "decode": (lambda z: model.decoder(z, training=False), [latent]),
        }
    for name, (fn, signature) in endpoints.items():
        archive.add_endpoint(name, fn, input_signature=signature)
    archive.write_out(str(out_dir), verbose=False)

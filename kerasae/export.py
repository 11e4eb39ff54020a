"""TensorFlow SavedModel export with reconstruction, encoder and decoder signatures.

Runs on the TensorFlow backend (see `backend.export_saved_model`).
"""

import keras


def export_saved_model(model_path, out_dir):
    """Loads a `.keras` model and writes a SavedModel to `out_dir`.

    Signatures: `serve` (image -> reconstruction), `encode` (image -> latent
    code: the mean for variational families) and `decode` (latent -> image).
    """
    import kerasae  # noqa: F401 -- registers the classes load_model needs

    model = keras.saving.load_model(model_path)
    image = keras.InputSpec(shape=(None, *model.image_shape), dtype="float32")
    latent = keras.InputSpec(shape=(None, model.latent_dim), dtype="float32")
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", lambda x: model(x, training=False), input_signature=[image])
    archive.add_endpoint("encode", lambda x: model.encode_tensor(x), input_signature=[image])
    archive.add_endpoint("decode", lambda z: model.decoder(z, training=False), input_signature=[latent])
    archive.write_out(str(out_dir), verbose=False)

"""First-layer filters: the kernel a model's encoder starts with, as image tiles, and how many of
them are edge-like -- localized and oriented, as a sparse code of natural image patches learns them
(Olshausen & Field 1996)."""

import keras
import numpy as np
from keras import ops

# A filter is edge-like when it is localized -- the quarter of its pixels with the largest squared
# weights holds at least EDGE_LOCALIZED of its energy (random filters: 0.71 median, 0.79 at the 95th
# percentile; Gabor filters: 0.90 median) -- and oriented: the coherence (l1 - l2) / (l1 + l2) of its
# gradients' structure tensor is at least EDGE_COHERENT (random: 0.15 median; Gabor: 0.82).
EDGE_LOCALIZED = 0.8
EDGE_COHERENT = 0.5


def first_layer_kernel(model, image_shape):
    """The encoder's first Dense or Conv2D kernel and the shape of one filter's tile: (pixels, units)
    with the image's (H, W), or (kh, kw, channels, filters) with (kh, kw)."""
    kinds = (keras.layers.Dense, keras.layers.Conv2D)
    first = next(layer for layer in model.encoder.layers if isinstance(layer, kinds))
    kernel = ops.convert_to_numpy(first.kernel)
    if kernel.ndim == 2:  # a conditional encoder's first layer also reads the one-hot label
        kernel = kernel[: int(np.prod(image_shape))]
    return first.name, kernel, (kernel.shape[:2] if kernel.ndim == 4 else tuple(image_shape[:2]))


def tiles(kernel, tile_shape):
    """Each filter as an (H, W) tile, channels averaged."""
    if kernel.ndim == 4:
        return np.moveaxis(kernel.mean(axis=2), -1, 0)
    channels = kernel.shape[0] // int(np.prod(tile_shape))
    return kernel.T.reshape(-1, *tile_shape, channels).mean(axis=-1)


def edge_like(tiles):
    """How many of the (n, H, W) filter tiles are localized and oriented (see EDGE_LOCALIZED), with
    each one's two measures."""
    energy = (tiles**2).reshape(len(tiles), -1)
    energy = energy / np.maximum(energy.sum(axis=1, keepdims=True), 1e-30)
    quarter = max(1, energy.shape[1] // 4)
    localized = -np.sort(-energy, axis=1)[:, :quarter].sum(axis=1)
    gy, gx = np.gradient(tiles, axis=(1, 2))
    jxx, jyy, jxy = (gx * gx).sum((1, 2)), (gy * gy).sum((1, 2)), (gx * gy).sum((1, 2))
    spread = np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2)  # l1 - l2 of the 2 x 2 structure tensor
    coherence = spread / np.maximum(jxx + jyy, 1e-30)
    edge = (localized >= EDGE_LOCALIZED) & (coherence >= EDGE_COHERENT)
    return {
        "edge_like": int(edge.sum()),
        "filters": len(tiles),
        "measure": f"top quarter of pixels hold >= {EDGE_LOCALIZED:.0%} of the energy and structure-tensor "
        f"coherence >= {EDGE_COHERENT}",
        "localized": localized.round(3).tolist(),
        "coherence": coherence.round(3).tolist(),
    }

"""Loss terms, each summed over an image's pixels and averaged over the batch.

Per-image sums are the natural unit (nats per image): a per-pixel mean would
hide the scale that makes AE and VAE numbers comparable with the literature.
"""

import math

from keras import ops

from kerasae import backend


def _flat(*tensors, batch_dims=1):
    """Each tensor with an image's axes (those after the first `batch_dims`) flattened into one:
    batch_dims 2 for (k, batch, ...) with k importance samples per image, where targets of shape
    (1, batch, ...) broadcast. Losses are computed and summed on these flat rows: under XLA on CPU
    a sum over (H, W, C) with C = 1 runs several times slower than over H * W * C."""
    # float32 whatever the layers compute in: under a mixed-precision policy the logits are float16.
    return [ops.reshape(ops.cast(t, "float32"), (*ops.shape(t)[:batch_dims], -1)) for t in tensors]


def bernoulli_nll(target, logits, batch_dims=1):
    """-log p(target | logits) under independent Bernoulli pixels: BCE summed per image."""
    target, logits = _flat(target, logits, batch_dims=batch_dims)
    return ops.sum(backend.sigmoid_cross_entropy(target, logits), axis=-1)


def bce(target, output, epsilon=1e-7, batch_dims=1):
    """BCE summed per image, from probabilities (when the output is not a sigmoid of logits)."""
    target, output = _flat(target, ops.clip(output, epsilon, 1.0 - epsilon), batch_dims=batch_dims)
    return -ops.sum(target * ops.log(output) + (1.0 - target) * ops.log(1.0 - output), axis=-1)


def half_squared_error(target, output, batch_dims=1):
    """The seed's MSE loss for real-valued inputs: 1/2 * sum of squared errors per image."""
    target, output = _flat(target, output, batch_dims=batch_dims)
    return 0.5 * ops.sum(ops.square(target - output), axis=-1)


def gaussian_nll(target, mean, batch_dims=1):
    """-log N(target | mean, I) summed per image (unit-variance Gaussian decoder)."""
    size = math.prod(ops.shape(target)[batch_dims:])
    return half_squared_error(target, mean, batch_dims) + 0.5 * math.log(2.0 * math.pi) * size


def gaussian_nll_scaled(target, mean, log_sigma, batch_dims=1):
    """-log N(target | mean, sigma^2) summed per image, log_sigma one per flat pixel (the decoder's
    learned variance, per pixel or per channel)."""
    target, mean = _flat(target, mean, batch_dims=batch_dims)
    z = (target - mean) * ops.exp(-log_sigma)
    return ops.sum(0.5 * ops.square(z) + log_sigma + 0.5 * math.log(2.0 * math.pi), axis=-1)


BINS = 255  # 8-bit images in [0, 1]: the values k / 255


def discretized_logistic_nll(target, mean, log_scale, batch_dims=1):
    """-log P(target) summed per image, each pixel an 8-bit value k / 255 whose probability is the
    mass of a logistic(mean, scale) over its bin, [k - 1/2, k + 1/2] / 255, the first and last bins
    reaching to -inf and +inf (Salimans et al. 2017, PixelCNN++). Exact probabilities: in bits per
    dimension it is comparable with the literature."""
    target, mean = _flat(target, mean, batch_dims=batch_dims)
    centred = target - mean
    inverse = ops.exp(-log_scale)
    upper = inverse * (centred + 0.5 / BINS)
    lower = inverse * (centred - 0.5 / BINS)
    log_cdf_upper = upper - ops.softplus(upper)  # log sigmoid(upper): the first bin
    log_one_minus_cdf_lower = -ops.softplus(lower)  # log (1 - sigmoid(lower)): the last bin
    mass = ops.sigmoid(upper) - ops.sigmoid(lower)
    # Where the bin's mass underflows float32, its density at the centre times the bin's width.
    middle = inverse * centred
    log_density = middle - log_scale - 2.0 * ops.softplus(middle) - math.log(BINS)
    log_mass = ops.where(mass > 1e-5, ops.log(ops.maximum(mass, 1e-12)), log_density)
    log_p = ops.where(
        target < 0.5 / BINS, log_cdf_upper, ops.where(target > 1.0 - 0.5 / BINS, log_one_minus_cdf_lower, log_mass)
    )
    return -ops.sum(log_p, axis=-1)


def kl_standard_normal(z_mean, z_log_var):
    """KL(N(z_mean, exp(z_log_var)) || N(0, I)) in closed form, summed over latent units.

    The seed writes the negative of this sum (the term that enters the bound);
    here it is the divergence itself, so it is >= 0.
    """
    z_mean, z_log_var = ops.cast(z_mean, "float32"), ops.cast(z_log_var, "float32")
    return -0.5 * ops.sum(1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=-1)


def mmd_imq(codes, prior, scales=(0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)):
    """The unbiased estimate of MMD^2 between a batch of codes and a batch drawn from the prior
    N(0, I), with the inverse multiquadratic kernel k(a, b) = C / (C + ||a - b||^2), summed over
    C = 2 * d * scale (Tolstikhin et al. 2018, WAE-MMD; d: the code's size)."""
    codes, prior = ops.cast(codes, "float32"), ops.cast(prior, "float32")
    n = ops.cast(ops.shape(codes)[0], "float32")
    d = ops.shape(codes)[-1]
    pairs = ops.maximum(n * (n - 1.0), 1.0)  # a batch of one has no pair: its terms are 0

    def distances(a, b):
        return (
            ops.sum(ops.square(a), 1)[:, None]
            + ops.sum(ops.square(b), 1)[None, :]
            - 2.0 * ops.matmul(a, ops.transpose(b))
        )

    within_codes, within_prior, across = distances(codes, codes), distances(prior, prior), distances(codes, prior)
    total = 0.0
    for scale in scales:
        c = 2.0 * d * scale
        # k(a, a) = 1: the diagonal's n ones are left out of the within-sample means.
        same = (ops.sum(c / (c + within_codes)) - n + ops.sum(c / (c + within_prior)) - n) / pairs
        total = total + same - 2.0 * ops.mean(c / (c + across))
    return total

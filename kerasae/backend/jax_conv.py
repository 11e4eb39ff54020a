"""Convolutions as matrix products, for the JAX backend on a CPU.

XLA's CPU convolutions are slow to differentiate when strided or transposed: one `Conv2DTranspose`
layer of the conv VAE took 725 ms per step forward and backward. Here every "same"-padded convolution
is one matrix product, XLA's fastest CPU op, and a reshuffle of rows:

- `conv_transpose`: each input pixel times the kernel's taps (a product to kh*kw*out channels), then
  each tap's plane added into its place in the output ("col2im", `_overlap_add`).
- `conv`: each output pixel's taps gathered side by side ("im2col", `_gather_taps`, the adjoint of
  `_overlap_add`), then a product with the kernel; with fewer output than input channels and
  stride 1 (an image's logits), the product first and the shifted sum after ("kn2row").

A tap table says where kernel tap a lands: row s*q + r of the large side pairs with row q - delta of
the small side, (delta, r) = divmod(a - p, s), p the "same" padding before the first row. The two
reshuffles are each other's gradient. On GPUs and TPUs the ops are Keras's own (cuDNN is fast there).
"""

import functools

import jax
from jax import lax
from jax import numpy as jnp

from kerasae.backend import common


def _pairs(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _taps(kernel_size, stride, padding):
    """(delta, phase) of each tap of one axis: divmod(tap - padding, stride)."""
    return tuple(divmod(a - padding, stride) for a in range(kernel_size))


def _shift(x, dh, dw):
    """x moved down by dh rows and right by dw columns (up, left if negative), zeros moved in."""
    return lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (dh, -dh, 0), (dw, -dw, 0), (0, 0, 0)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _overlap_add(planes, taps_h, taps_w, strides):
    """(B, h, w, kh, kw, C) planes, one per tap, added at their places: (B, h*sh, w*sw, C)."""
    batch, h, w, _, _, channels = planes.shape
    sh, sw = strides
    phases = {}
    for a, (dh, rh) in enumerate(taps_h):
        for b, (dw, rw) in enumerate(taps_w):
            plane = _shift(planes[:, :, :, a, b, :], dh, dw)
            phases[rh, rw] = plane + phases[rh, rw] if (rh, rw) in phases else plane
    zeros = jnp.zeros((batch, h, w, channels), planes.dtype)
    rows = [jnp.stack([phases.get((rh, rw), zeros) for rw in range(sw)], axis=3) for rh in range(sh)]
    return jnp.stack(rows, axis=2).reshape(batch, h * sh, w * sw, channels)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _gather_taps(x, taps_h, taps_w, strides):
    """The adjoint of `_overlap_add`: (B, h*sh, w*sw, C) -> (B, h, w, kh, kw, C), each output
    position's taps side by side."""
    sh, sw = strides
    batch, height, width, channels = x.shape
    phases = x.reshape(batch, height // sh, sh, width // sw, sw, channels)
    planes = [_shift(phases[:, :, rh, :, rw, :], -dh, -dw) for dh, rh in taps_h for dw, rw in taps_w]
    return jnp.stack(planes, axis=3).reshape(batch, height // sh, width // sw, len(taps_h), len(taps_w), channels)


# Both are linear, and each is the other's gradient.
_overlap_add.defvjp(
    lambda planes, *table: (_overlap_add(planes, *table), None),
    lambda *table_residual_grad: (_gather_taps(table_residual_grad[-1], *table_residual_grad[:3]),),
)
_gather_taps.defvjp(
    lambda x, *table: (_gather_taps(x, *table), None),
    lambda *table_residual_grad: (_overlap_add(table_residual_grad[-1], *table_residual_grad[:3]),),
)


def conv(x, kernel, strides):
    """`keras.ops.conv(x, kernel, strides, padding="same")` of channels-last images, kernel (kh, kw, in, out)."""
    if jax.default_backend() != "cpu":
        return common.conv(x, kernel, strides)
    return _conv(x, kernel, _pairs(strides))


# Compiled as one computation: called outside a compiled step (a model called directly on a few
# images, for figures and checks), the two dozen small ops of a convolution each compiled and ran
# on their own (0.29 s against 0.13 s for a new shape, 5 against 0.2 ms for a seen one). Within a
# compiled step XLA inlines it.
@functools.partial(jax.jit, static_argnums=2)
def _conv(x, kernel, strides):
    (sh, sw), (kh, kw, cin, cout) = strides, kernel.shape
    batch, height, width, _ = x.shape
    out_h, out_w = -(-height // sh), -(-width // sw)
    top = max((out_h - 1) * sh + kh - height, 0) // 2
    left = max((out_w - 1) * sw + kw - width, 0) // 2
    if (sh, sw) == (1, 1) and cout < cin:  # kn2row: tap a of input row i adds to output row i + top - a
        planes = x.reshape(-1, cin) @ kernel.transpose(2, 0, 1, 3).reshape(cin, -1)
        taps_h, taps_w = ((top - a, 0) for a in range(kh)), ((left - b, 0) for b in range(kw))
        return _overlap_add(planes.reshape(batch, height, width, kh, kw, cout), tuple(taps_h), tuple(taps_w), (1, 1))
    bottom, right = sh * out_h - height, sw * out_w - width  # whole phases (past the "same" padding: unread)
    x = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (0, bottom, 0), (0, right, 0), (0, 0, 0)))
    columns = _gather_taps(x, _taps(kh, sh, top), _taps(kw, sw, left), (sh, sw))
    return (columns.reshape(-1, kh * kw * cin) @ kernel.reshape(-1, cout)).reshape(batch, out_h, out_w, cout)


def conv_transpose(x, kernel, strides):
    """`keras.ops.conv_transpose(x, kernel, strides, padding="same")`, kernel (kh, kw, out, in): the
    adjoint of `conv` with these strides on an input `strides` times the size of x."""
    if jax.default_backend() != "cpu":
        return common.conv_transpose(x, kernel, strides)
    return _conv_transpose(x, kernel, _pairs(strides))


@functools.partial(jax.jit, static_argnums=2)
def _conv_transpose(x, kernel, strides):
    (sh, sw), (kh, kw, cout, cin) = strides, kernel.shape
    batch, height, width, _ = x.shape
    taps_h, taps_w = _taps(kh, sh, max(kh - sh, 0) // 2), _taps(kw, sw, max(kw - sw, 0) // 2)
    planes = x.reshape(-1, cin) @ kernel.transpose(3, 0, 1, 2).reshape(cin, -1)
    return _overlap_add(planes.reshape(batch, height, width, kh, kw, cout), taps_h, taps_w, (sh, sw))

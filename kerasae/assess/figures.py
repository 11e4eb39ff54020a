"""Figures as PNG files, drawn with matplotlib's Agg backend (no screen needed)."""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kerasae.assess import filters as first_layer  # noqa: E402

DPI = 100


def _image(ax, img):
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    ax.imshow(np.clip(img, 0.0, 1.0), cmap="gray" if img.ndim == 2 else None, vmin=0.0, vmax=1.0)
    ax.set_xticks([])
    ax.set_yticks([])


def image_rows(rows, path, title):
    """A grid of images: one labelled row per (label, images) pair."""
    n_cols = max(len(images) for _, images in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.0 * n_cols + 1.2, 1.0 * len(rows) + 0.6), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            if c < len(images):
                _image(ax, images[c])
            else:
                ax.axis("off")
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def loss_curves(history, path, title):
    """Training and validation curves of every logged loss term, one panel each."""
    terms = [k for k in history if not k.startswith("val_")]
    fig, axes = plt.subplots(1, len(terms), figsize=(4.0 * len(terms), 3.2), squeeze=False)
    for ax, term in zip(axes[0], terms):
        epochs = np.arange(1, len(history[term]) + 1)
        ax.plot(epochs, history[term], label="train")
        if f"val_{term}" in history:
            ax.plot(epochs, history[f"val_{term}"], label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{term} (nats / image)")
        ax.set_title(term)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def filters(weights, tile_shape, path, title, max_tiles=100):
    """First-layer weights as image tiles (the seed's Fig. 4): grey is 0, white and black the
    tile's 99th percentile of |w| (so a few never-updated edge pixels do not wash it out).

    Args:
        weights: dense kernel (pixels, units) or conv kernel (kh, kw, channels, filters).
        tile_shape: (H, W) of one tile: the image size for dense, the kernel size for conv.
    """
    tiles = first_layer.tiles(weights, tile_shape)[:max_tiles]
    cols = int(np.ceil(np.sqrt(len(tiles))))
    rows = int(np.ceil(len(tiles) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(0.9 * cols, 0.9 * rows + 0.5), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i < len(tiles):
            t = tiles[i]
            scale = 2.0 * np.percentile(np.abs(t), 99) + 1e-12
            ax.imshow(np.clip(0.5 + t / scale, 0.0, 1.0), cmap="gray", vmin=0.0, vmax=1.0)
        else:
            ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def latent_scatter(codes, labels, path, title):
    """Test codes in 2-D (first two principal components beyond 2-D), coloured by label."""
    axis_names = ("z[0]", "z[1]")
    if codes.shape[1] > 2:
        from sklearn.decomposition import PCA

        codes = PCA(2, random_state=0).fit_transform(codes)
        axis_names = ("principal component 1", "principal component 2")
    elif codes.shape[1] == 1:
        codes = np.concatenate([codes, np.zeros_like(codes)], axis=1)
    fig, ax = plt.subplots(figsize=(6.0, 5.0))
    if labels is None:
        ax.scatter(codes[:, 0], codes[:, 1], s=4, alpha=0.7)
    else:
        points = ax.scatter(codes[:, 0], codes[:, 1], c=labels, cmap="tab10", s=4, alpha=0.7)
        fig.colorbar(points, ax=ax, label="label")
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def manifold(decode, path, title, n=15):
    """Decodes of a 2-D latent grid spaced by Gaussian quantiles (Kingma and Welling, Fig. 4)."""
    from scipy.stats import norm

    ticks = norm.ppf(np.linspace(0.05, 0.95, n)).astype("float32")
    grid = np.array([[x, y] for y in ticks[::-1] for x in ticks], dtype="float32")
    images = decode(grid)
    h, w = images.shape[1:3]
    canvas = images[..., 0].reshape(n, n, h, w).transpose(0, 2, 1, 3).reshape(n * h, n * w)
    fig, ax = plt.subplots(figsize=(7.0, 7.0))
    ax.imshow(canvas, cmap="gray", extent=(ticks[0], ticks[-1], ticks[0], ticks[-1]))
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


# -- an entry's figures ---------------------------------------------------------------------


def draw_entry(folder, name, wanted, model, dataset, n_examples=10, history=None, snapshots=None):
    """Draws the figures named in `wanted` (a recipe's `outputs.figures`) of a trained model into
    `folder`, one `<figure>.png` each; a figure without what it shows (no snapshots) is skipped."""
    os.makedirs(folder, exist_ok=True)
    x = dataset.x_test[:n_examples]
    y = dataset.y_test[:n_examples] if dataset.y_test is not None else None
    shown = _Shown(name, model, dataset, x, y, history, snapshots)
    for figure in wanted:
        _DRAWERS[figure](shown, os.path.join(folder, f"{figure}.png"))


class _Shown:
    """What an entry's figures are drawn from."""

    def __init__(self, name, model, dataset, x, labels, history, snapshots):
        self.name, self.model, self.dataset = name, model, dataset
        self.x, self.labels, self.history, self.snapshots = x, labels, history, snapshots


def _reconstructions(s, path):
    if s.snapshots and s.snapshots.reconstructions:
        taken = s.snapshots.reconstructions
        rows = [("input", s.x)] + [(f"epoch {e}", taken[e][: len(s.x)]) for e in sorted(taken)]
        image_rows(rows, path, f"{s.name}: reconstructions after each epoch shown")


def score_panels(scores, is_anomaly, threshold, path, title):
    """Test scores of normal and anomalous items as histograms with the threshold, and the ROC curve."""
    from sklearn.metrics import roc_auc_score, roc_curve

    is_anomaly = np.asarray(is_anomaly, dtype=bool)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.0, 3.4))
    bins = np.histogram_bin_edges(scores, bins=50)
    left.hist(scores[~is_anomaly], bins, alpha=0.6, density=True, label=f"normal ({(~is_anomaly).sum()})")
    left.hist(scores[is_anomaly], bins, alpha=0.6, density=True, label=f"anomalous ({is_anomaly.sum()})")
    if threshold is not None:
        left.axvline(threshold, color="black", linestyle="--", label="threshold")
    left.set_xlabel("anomaly score")
    left.set_ylabel("density of test items")
    left.legend(fontsize=8)
    fpr, tpr, _ = roc_curve(is_anomaly, scores)
    right.plot(fpr, tpr)
    right.plot([0, 1], [0, 1], linestyle=":", color="grey")
    right.set_xlabel("false positive rate")
    right.set_ylabel("true positive rate")
    right.set_title(f"ROC, AUROC {roc_auc_score(is_anomaly, scores):.3f}")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _loss(s, path):
    if s.history:
        loss_curves(s.history, path, f"{s.name}: loss per epoch")


def _filters(s, path):
    name, kernel, tile = first_layer.first_layer_kernel(s.model, s.dataset.image_shape)
    filters(kernel, tile, path, f"{s.name}: first-layer filters ({name})")


def _latent(s, path):
    d = s.dataset
    codes = s.model.encode(d.x_test, d.y_test)
    if d.y_test is None and d.anomalous is not None:  # a series' windows: 1 where one holds a known anomaly
        latent_scatter(codes, d.anomalous.astype(int), path, f"{s.name}: test codes, 1 = anomalous")
    else:
        latent_scatter(codes, d.y_test, path, f"{s.name}: test codes by label")


TRAVERSAL_UNITS = 10
TRAVERSAL_STEPS = 9


def _traversals(s, path):
    """Each of the most active code units varied over -3..3 of its standard deviation (over the
    test codes) around the first test image's code, the others held."""
    d, model = s.dataset, s.model
    codes = model.encode(d.x_test, d.y_test)
    spread = codes.std(axis=0)
    units = np.argsort(-spread)[:TRAVERSAL_UNITS]
    offsets = np.linspace(-3.0, 3.0, TRAVERSAL_STEPS, dtype="float32")
    labels = None if s.labels is None else [s.labels[0]] * TRAVERSAL_STEPS
    rows = []
    for unit in units:
        walk = np.repeat(codes[:1], TRAVERSAL_STEPS, axis=0)
        walk[:, unit] += offsets * spread[unit]
        rows.append((f"unit {unit}", model.decode(walk, labels)))
    image_rows(rows, path, f"{s.name}: code units varied by -3..3 standard deviations")


def _denoising(s, path):
    noisy = s.model.corrupt(s.x)
    rows = [("input", s.x), ("noisy", noisy), ("output", s.model.reconstruct(noisy, s.labels))]
    image_rows(rows, path, f"{s.name}: input, noisy input, output")


def _samples(s, path):
    images = s.model.generate(40, seed=0)  # a conditional model's: the classes in turn
    rows = [("", images[i : i + 10]) for i in range(0, len(images), 10)]
    image_rows(rows, path, f"{s.name}: samples from the prior")


def _interpolation(s, path):
    if s.snapshots and s.snapshots.interpolations:
        walks = s.snapshots.interpolations
        rows = [(f"epoch {e}", walks[e]) for e in sorted(walks)]
        image_rows(rows, path, f"{s.name}: latent interpolation after each epoch shown")


def _manifold(s, path):
    def decode(z):  # given the first test item's label, where there is one
        return s.model.decode(z, None if s.labels is None else [s.labels[0]] * len(z))

    manifold(decode, path, f"{s.name}: decoded latent grid")


def _scores(s, path):
    d = s.dataset
    if d.anomalous is not None and 0 < d.anomalous.sum() < len(d.anomalous):
        scores = s.model.score(d.x_test, d.y_test)
        score_panels(scores, d.anomalous, s.model.threshold, path, f"{s.name}: test scores, normal and anomalous")


def series_panels(values, columns, scores, threshold, is_anomaly, path, title, first_step=0):
    """A series (standardized columns) above its scores per step with the threshold; flagged steps
    marked, known anomalous steps shaded in both."""
    from kerasae.data import series

    steps = first_step + np.arange(len(values))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10.0, 5.0), sharex=True)
    for c, column in enumerate(columns):
        top.plot(steps, values[:, c], linewidth=0.6, label=column)
    top.set_ylabel("standardized value")
    top.legend(fontsize=8, loc="upper left")
    bottom.plot(steps, scores, linewidth=0.6, color="black", label="score")
    if threshold is not None:
        bottom.axhline(threshold, color="tab:red", linestyle="--", linewidth=0.8, label="threshold")
        flagged = scores > threshold
        bottom.scatter(steps[flagged], scores[flagged], s=4, color="tab:red", zorder=3, label="flagged")
    if is_anomaly is not None:
        for i, (a, b) in enumerate(series.events(is_anomaly)):
            for ax in (top, bottom):
                ax.axvspan(
                    first_step + a - 0.5,
                    first_step + b - 0.5,
                    color="orange",
                    alpha=0.25,
                    lw=0,
                    label="known anomaly" if (i == 0 and ax is bottom) else None,
                )
    bottom.set_yscale("log")
    bottom.set_xlabel("time step")
    bottom.set_ylabel("anomaly score")
    bottom.legend(fontsize=8, loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _series(s, path):
    from kerasae.data import series

    kept = s.dataset.series
    if kept is not None:
        scores = series.step_scores(s.model, kept.test, kept.length)
        title = f"{s.name}: the test part's steps, scored"
        columns = s.dataset.record["columns"]
        series_panels(kept.test, columns, scores, kept.threshold, kept.test_anomalous, path, title, kept.test_first)


_DRAWERS = {
    "reconstructions": _reconstructions,
    "loss": _loss,
    "filters": _filters,
    "latent": _latent,
    "traversals": _traversals,
    "denoising": _denoising,
    "samples": _samples,
    "interpolation": _interpolation,
    "manifold": _manifold,
    "scores": _scores,
    "series": _series,
}

"""Figures as PNG files, drawn with matplotlib's Agg backend (no screen needed)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

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
    fig, axes = plt.subplots(
        len(rows), n_cols, figsize=(1.0 * n_cols + 1.2, 1.0 * len(rows) + 0.6), squeeze=False
    )
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

"""What the zoo's web page (`kerasae serve`) asks of an entry's model: drawings in, images out.

An `Explorer` holds one entry's model, loaded with `safe_mode`, and answers the page's questions:
what the model is (`info`), what it makes of a drawing or a test digit (`reconstruct`, with the
model's own corruption applied first when asked), what a code decodes to (`decode`, behind the
sliders and the 2-D map), the walk between two images (`interpolate`) and draws from its prior
or its fitted mixture (`sample`). Nothing here writes to the entry: a mixture that was never
fitted (no `sampler.npz`) is simply not offered.

Images leave as PNG data URLs, one pixel per image pixel (the page scales them up).
"""

import base64
import io
import os
import threading

import numpy as np
from PIL import Image

from kerasae import families
from kerasae.assess import samplers
from kerasae.errors import KerasaeError
from kerasae.spec import recipe
from kerasae.store import zoo

# A drawing becomes an input the way MNIST's digits were made: its strokes' bounding box scaled
# into the central 20 x 20 of 28 x 28 and centred on their centre of mass (LeCun et al. 1998).
DIGIT_BOX = 20 / 28
INK = 0.05  # pixels above this count as strokes
# The range of a slider over a prior N(0, I), and over a fitted density: mean +/- SPREAD sd.
SPREAD = 3.0
MAX_SLIDERS = 128  # more code units than this get no sliders (the page would be a wall of them)
MAX_INTERPOLATION_STEPS = 16
MAX_SAMPLES = 64
MAX_DRAWING_SIDE = 1024  # pixels a side of a drawing sent by the page


class RequestError(KerasaeError):
    """A request the model cannot answer as asked (a bad code length, a label out of range)."""


def png_data_url(image):
    """A `data:image/png` URL of one (H, W, C) image (C other than 1 or 3: the channels one above
    another, in grey); values outside [0, 1] are scaled to it."""
    image = np.asarray(image, dtype="float32")
    low, high = float(image.min()), float(image.max())
    if low < 0.0 or high > 1.0:
        image = (image - low) / max(high - low, 1e-8)
    pixels = np.round(np.clip(image, 0.0, 1.0) * 255).astype("uint8")
    if pixels.shape[-1] not in (1, 3):  # a series' window: one grey row of pixels per column, stacked
        pixels = pixels.transpose(2, 0, 1).reshape(-1, pixels.shape[1], 1)
    mode = "L" if pixels.shape[-1] == 1 else "RGB"
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_data_url(url, max_side):
    """The grayscale pixels in [0, 1] of a PNG or JPEG data URL; `RequestError` for anything else."""
    head, _, body = url.partition(",")
    if head not in ("data:image/png;base64", "data:image/jpeg;base64"):
        raise RequestError("source.image: expected a data:image/png;base64 or data:image/jpeg;base64 URL")
    try:
        raw = base64.b64decode(body, validate=True)
        with Image.open(io.BytesIO(raw)) as picture:
            if picture.format not in ("PNG", "JPEG"):
                raise RequestError(f"source.image: a {picture.format} file, not a PNG or JPEG")
            if max(picture.size) > max_side:
                raise RequestError(f"source.image: {picture.size[0]} x {picture.size[1]} pixels; at most {max_side}")
            return strokes(picture)
    except RequestError:
        raise
    except (ValueError, OSError, Image.DecompressionBombError) as e:
        raise RequestError(f"source.image: not a readable image ({type(e).__name__}: {e})") from None


def strokes(picture):
    """A drawing's ink in [0, 1]: grayscale, transparent pixels as background."""
    if picture.mode in ("RGBA", "LA", "P"):
        picture = picture.convert("RGBA")
        alpha = np.asarray(picture.getchannel("A"), dtype="float32") / 255.0
        gray = np.asarray(picture.convert("L"), dtype="float32") / 255.0
        return gray * alpha
    return np.asarray(picture.convert("L"), dtype="float32") / 255.0


def digit_input(ink, image_shape):
    """A drawing (2-D ink in [0, 1]) as a model input of `image_shape`, framed like an MNIST digit."""
    height, width, channels = image_shape
    out = np.zeros((height, width), dtype="float32")
    rows, cols = np.nonzero(ink > INK)
    if len(rows):
        crop = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        scale = DIGIT_BOX * min(height, width) / max(crop.shape)
        size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
        small = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.LANCZOS), dtype="float32")
        small = np.clip(small, 0.0, 1.0)
        weights = small.sum()
        cy = (small.sum(axis=1) @ np.arange(small.shape[0])) / weights
        cx = (small.sum(axis=0) @ np.arange(small.shape[1])) / weights
        top = int(np.clip(round((height - 1) / 2 - cy), 0, height - small.shape[0]))
        left = int(np.clip(round((width - 1) / 2 - cx), 0, width - small.shape[1]))
        out[top : top + small.shape[0], left : left + small.shape[1]] = small
    return np.repeat(out[:, :, None], channels, axis=-1)


class Explorer:
    """One zoo entry's model and what the page can ask of it (thread-safe: one call at a time)."""

    def __init__(self, entry):
        self.entry = entry
        self.name = os.path.basename(os.path.normpath(entry))
        self.metrics = zoo.read_metrics(entry)
        self.family = families.get(self.metrics["family"])
        self.recipe = recipe.load(os.path.join(entry, zoo.RECIPE_FILE)).to_dict()
        self.model = zoo.load(entry, safe_mode=True)
        self.lock = threading.Lock()
        check = _check_arrays(entry)
        self.test_x = check.get("x", np.zeros((0, *self.image_shape), dtype="float32")).astype("float32")
        self.test_y = check.get("y")
        self.test_codes = check.get("codes")
        sampler = os.path.join(entry, zoo.SAMPLER_FILE)
        self.mixture = samplers.load(sampler) if os.path.isfile(sampler) else None
        self.ranges = self.code_ranges()

    @property
    def image_shape(self):
        return tuple(self.model.image_shape)

    @property
    def conditional(self):
        return bool(self.model.conditional)

    def samplers(self):
        """The samplers this entry offers: its prior (generative families), its fitted mixture."""
        return (["prior"] if self.model.generative else []) + (["gmm"] if self.mixture is not None else [])

    def sliders(self):
        """Whether the code's units can be moved one by one: a continuous code (the family draws
        traversals) of at most `MAX_SLIDERS` units."""
        return "traversals" in self.family.figures and self.model.code_size <= MAX_SLIDERS

    def code_ranges(self):
        """(low, high) per code unit: the prior's +/- SPREAD for a generative family, else the
        fitted mixture's (or the check images' codes') mean +/- SPREAD standard deviations."""
        size = self.model.code_size
        if self.model.generative:
            return np.tile([-SPREAD, SPREAD], (size, 1)).astype("float32")
        if self.mixture is not None:
            weights, means = self.mixture["weights"][:, None], self.mixture["means"]
            covariances = self.mixture["covariances"]
            variances = np.diagonal(covariances, axis1=1, axis2=2) if covariances.ndim == 3 else covariances
            mean = (weights * means).sum(axis=0)
            sd = np.sqrt(np.maximum((weights * (variances + means**2)).sum(axis=0) - mean**2, 1e-8))
        elif self.test_codes is not None and len(self.test_codes):
            mean, sd = self.test_codes.mean(axis=0), self.test_codes.std(axis=0) + 1e-3
        else:
            mean, sd = np.zeros(size), np.ones(size)
        return np.stack([mean - SPREAD * sd, mean + SPREAD * sd], axis=1).astype("float32")

    def info(self):
        """What the page needs to lay itself out, as JSON values."""
        spreads = self.ranges[:, 1] - self.ranges[:, 0]
        if self.test_codes is not None and len(self.test_codes) > 1:
            spreads = self.test_codes.std(axis=0)
        return {
            "name": self.name,
            "family": self.family.name,
            "summary": self.family.summary,
            "image_shape": list(self.image_shape),
            "code_size": int(self.model.code_size),
            "generative": bool(self.model.generative),
            "conditional": self.conditional,
            "num_classes": int(self.model.num_classes) if self.conditional else 0,
            "corruption": self.recipe.get("corruption") if self.model.corruption is not None else None,
            "samplers": self.samplers(),
            "score": {"kind": self.model.score_kind, "threshold": self.model.threshold},
            "sliders": self.sliders(),
            "map": self.sliders() and self.model.code_size == 2,
            "ranges": self.ranges.tolist(),
            # Units by how much they vary over the test images: the sliders worth moving first.
            "unit_order": [int(u) for u in np.argsort(-spreads, kind="stable")],
            "test_digits": [
                {"index": i, "label": None if self.test_y is None else int(self.test_y[i]), "image": png_data_url(x)}
                for i, x in enumerate(self.test_x)
            ],
        }

    # -- answers -------------------------------------------------------------

    def image(self, source):
        """The model input for a request's source: a drawing ({"image": data URL}) or a test digit
        ({"test": index} into the entry's check images)."""
        if source.get("test") is not None:
            index = source["test"]
            if not 0 <= index < len(self.test_x):
                last = len(self.test_x) - 1
                raise RequestError(f"source.test: {index} is not a test image of {self.name} (0..{last})")
            return self.test_x[index]
        return digit_input(decode_data_url(source["image"], MAX_DRAWING_SIDE), self.image_shape)

    def labels(self, label, n=1):
        """Labels for n images: the picked class for a conditional model, None otherwise."""
        if not self.conditional:
            if label is not None:
                raise RequestError(f"label: {self.name} is not conditioned on a class")
            return None
        classes = self.model.num_classes
        if label is None:
            raise RequestError(f"label: {self.name} is a conditional {self.family.name}; pick a class 0..{classes - 1}")
        if not 0 <= label < classes:
            raise RequestError(f"label: {label} is out of range; {self.name} has classes 0..{classes - 1}")
        return np.full(n, label, dtype="int64")

    def reconstruct(self, source, corrupt=False, label=None):
        """{input, noisy (when corrupted), output, code, score} for one image."""
        x = self.image(source)[None]
        labels = self.labels(label)
        if corrupt and self.model.corruption is None:
            raise RequestError(f"corrupt: {self.name} was trained without corruption")
        with self.lock:
            answer = {"input": png_data_url(x[0])}
            if corrupt:
                x = self.model.corrupt(x)
                answer["noisy"] = png_data_url(x[0])
            code = self.model.encode(x, labels)
            answer["output"] = png_data_url(self.model.reconstruct(x, labels)[0])
            score = float(self.model.score(x, labels)[0])
        answer["code"] = [float(v) for v in np.asarray(code[0]).ravel()]
        # The model's anomaly score of what it was given, against its calibrated threshold (if any).
        threshold = self.model.threshold
        answer["score"] = {
            "value": score,
            "threshold": threshold,
            "flagged": None if threshold is None else score > threshold,
        }
        return answer

    def decode(self, code, label=None):
        """{image} decoded from one code (its length the model's code size)."""
        z = np.asarray(code, dtype="float32")
        if z.shape != (self.model.code_size,):
            raise RequestError(f"code: {len(code)} numbers; {self.name}'s code has {self.model.code_size}")
        if not np.all(np.isfinite(z)):
            raise RequestError("code: every number must be finite")
        labels = self.labels(label)
        with self.lock:
            return {"image": png_data_url(self.model.decode(z[None], labels)[0])}

    def interpolate(self, a, b, steps, labels=(None, None)):
        """{images}: `steps` decodings on the line between the codes of sources a and b."""
        x_a, x_b = self.image(a), self.image(b)
        label_a, label_b = (self.labels(label) for label in labels)  # each checked; None when unconditional
        pair = None if label_a is None else (int(label_a[0]), int(label_b[0]))
        with self.lock:
            images = self.model.interpolate(x_a, x_b, steps, pair)
        return {"images": [png_data_url(image) for image in images]}

    def sample(self, sampler, n, seed, label=None):
        """{images}: n draws from the named sampler (see `samplers`)."""
        if sampler not in self.samplers():
            offered = ", ".join(self.samplers()) or "none"
            raise RequestError(f"sampler: {self.name} offers no '{sampler}' sampler (offered: {offered})")
        labels = self.labels(label, n)
        with self.lock:
            codes = samplers.draw(self.model, sampler, n, seed, self.mixture)
            images = self.model.decode(codes, labels)
        return {"images": [png_data_url(image) for image in images]}


def _check_arrays(entry):
    """The entry's check images, their labels and codes (`zoo.write_check`); {} when it has none."""
    path = os.path.join(entry, zoo.CHECK_FILE)
    if not os.path.isfile(path):
        return {}
    with np.load(path, allow_pickle=False) as saved:
        return {key: saved[key] for key in saved.files}


def card_markdown(entry):
    """The entry's card (README.md), or a line saying it has none."""
    path = os.path.join(entry, zoo.CARD_FILE)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return f.read()
    return f"# {os.path.basename(entry)}\n\nThis entry has no card ({zoo.CARD_FILE})."

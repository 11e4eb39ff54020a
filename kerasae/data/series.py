"""Time series: windows cut from columns of a CSV or Parquet file, and anomaly scores per time step.

A window of `length` steps of C columns is a 1 x length "image" with C channels: dense networks
flatten it, conv layers run along time (kernels 1 x k, strides 1 x s: a Conv1D). The columns are
standardized with the training part's mean and standard deviation (a `tables.Transform` of numeric
columns, written into the entry as `transform.json`). The series is split in time, never shuffled:
the first steps train (their last `validation_split` validates), the last `test_split` tests; windows
never cross from one part to the next.

A time step's score is its reconstruction error (half the squared error summed over the columns),
averaged over every window that holds it (windows cut at every step, stride 1); its threshold is
the `score.quantile` of the validation steps' scores. Both, with the window, are written into the
entry as `series.json`, so `kerasae score` scores new series the same way.
"""

import dataclasses
import json
import os

import numpy as np

from kerasae.data import dataset, tables
from kerasae.errors import DataError

SERIES_FILE = "series.json"
# Windows per block when scoring steps: the reconstruction of a block is held in memory.
SCORE_WINDOWS = 4096


@dataclasses.dataclass
class Series:
    """The held-out parts of a series, kept whole for scores per step, and how windows are cut.

    Attributes:
        length, stride: the windows' length and the step between training windows.
        validation, test: standardized values (steps, columns) of the validation and test parts.
        test_anomalous: which test steps are known anomalies (the label column), or None.
        test_first: the test part's first step, counted from the file's first row.
        threshold, quantile: the threshold of step scores and the quantile of validation steps
            it was set to, once calibrated (`calibrate`).
    """

    length: int
    stride: int
    validation: np.ndarray
    test: np.ndarray
    test_anomalous: np.ndarray | None = None
    test_first: int = 0
    threshold: float | None = None
    quantile: float | None = None

    def to_dict(self):
        """What `series.json` holds: enough to score new series as the test part was."""
        window = {"length": self.length, "stride": self.stride}
        return {"window": window, "threshold": self.threshold, "quantile": self.quantile}


def starts(steps, length, stride):
    """First steps of windows of `length` every `stride` steps, the last one ending on the last step."""
    if steps < length:
        return np.zeros(0, dtype=np.int64)
    first = np.arange(0, steps - length + 1, stride, dtype=np.int64)
    return first if first[-1] == steps - length else np.append(first, steps - length)


def cut(values, length, stride):
    """(windows (N, 1, length, C) float32, their first steps) of values (steps, C)."""
    at = starts(len(values), length, stride)
    view = np.lib.stride_tricks.sliding_window_view(values, length, axis=0)  # (steps - length + 1, C, length)
    windows = view[at].transpose(0, 2, 1)[:, None]
    return np.ascontiguousarray(windows, dtype=np.float32), at


def require_length(steps, length, where):
    if steps < length:
        raise DataError(f"{where}: {steps} time steps, shorter than one window (data.window.length {length})")


def step_scores(model, values, length):
    """Each step's score: its reconstruction error (1/2 squared error summed over the columns),
    averaged over the windows (every stride-1 window) that hold it."""
    steps = len(values)
    total, count = np.zeros(steps), np.zeros(steps)
    all_starts = starts(steps, length, 1)
    for block in range(0, len(all_starts), SCORE_WINDOWS):
        at = all_starts[block : block + SCORE_WINDOWS]
        windows = np.stack([values[s : s + length] for s in at]).astype(np.float32)[:, None]
        restored = model.reconstruct(windows)
        errors = 0.5 * np.square(windows - restored).sum(axis=-1)[:, 0]  # (N, length)
        for offset in range(length):  # step s + offset of window s
            np.add.at(total, at + offset, errors[:, offset])
            np.add.at(count, at + offset, 1.0)
    return total / np.maximum(count, 1.0)


def calibrate(model, series, quantile):
    """Sets `series.threshold` to the `quantile` of the validation steps' scores (the training part's
    last steps, taken as normal); returns those scores."""
    scores = step_scores(model, series.validation, series.length)
    series.threshold, series.quantile = float(np.quantile(scores, quantile)), float(quantile)
    return scores


def events(is_anomaly):
    """(first, last + 1) of each run of anomalous steps."""
    edges = np.diff(np.concatenate([[0], np.asarray(is_anomaly, dtype=np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def step_metrics(scores, threshold, is_anomaly):
    """How the flagged steps (score > threshold) match the known anomalous ones: AUROC, AUPRC and the
    confusion per step (`anomaly.detection_metrics`), and the share of anomalies (runs of anomalous
    steps) with at least one flagged step."""
    from kerasae import anomaly

    truth = np.asarray(is_anomaly, dtype=bool)
    out = {"steps": int(len(truth)), **anomaly.detection_metrics(truth, scores, threshold)}
    out.pop("items")
    out["anomalous_steps"] = out.pop("anomalies")
    found = events(truth)
    out["events"] = len(found)
    if threshold is not None and found:
        flags = np.asarray(scores) > threshold
        out["events_detected"] = sum(bool(flags[a:b].any()) for a, b in found) / len(found)
    return out


def summary(model, series):
    """The test part's step scores against the step threshold: share flagged and, where the
    anomalies are known, `step_metrics`."""
    scores = step_scores(model, series.test, series.length)
    out = {"threshold": series.threshold, "threshold_quantile": series.quantile}
    if series.threshold is not None:
        out["flagged"] = float((scores > series.threshold).mean())
    if series.test_anomalous is not None:
        out.update(step_metrics(scores, series.threshold, series.test_anomalous))
    return out


def anomalous_windows(is_anomaly, at, length):
    """Which windows (first steps `at`) hold at least one anomalous step."""
    cumulative = np.concatenate([[0], np.cumsum(np.asarray(is_anomaly, dtype=np.int64))])
    return (cumulative[at + length] - cumulative[at]) > 0


def load(folder):
    """The entry's `series.json` (window, step threshold), or None for an entry not of a series."""
    path = os.path.join(folder, SERIES_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def load_series(section, seed=0):
    """Windows of a series (`kerasae.data.series`): the file's rows in order, split in time into training,
    validation and test parts; the transform fitted on the training part; windows that hold a step the
    label column marks anomalous left out of training and validation."""
    path = section.path
    frame = tables.read(path)
    label = section.label_column
    if label is not None:
        tables.require_columns(frame, [label], path, what="label column (data.label_column)")
    columns = section.columns or [c for c in frame.columns if c != label]
    tables.require_columns(frame, columns, path)
    length, stride = section.window.length, section.window.stride
    require_length(len(frame), length, path)
    values = tables.clean(frame, columns, [], section.missing, path)  # a bad value named by column and line
    anomalous = step_labels(frame, label, path)
    parts = _series_parts(len(frame), section, path)
    val_first, n_train = parts["validation"]
    transform = tables.Transform.fit(values.iloc[:val_first], columns, [], section.missing)
    steps = transform.apply(values, path)[:, 0, :, 0]  # (steps, columns)
    by_part, dropped = _cut_series(steps, anomalous, parts, length, stride)
    (x_train, _), (x_val, _), (x_test, test_held) = by_part["training"], by_part["validation"], by_part["test"]
    if section.limit:  # windows
        x_train, x_test = x_train[: section.limit], x_test[: section.limit]
        test_held = None if test_held is None else test_held[: section.limit]
    if len(x_train) == 0:
        raise DataError(f"{path}: every training window holds a step marked anomalous in '{label}'")
    record = {
        "name": "sequence",
        "source": os.path.basename(path),
        "sha256": {"file": dataset.file_sha256(path)},
        "columns": list(columns),
        "window": {"length": length, "stride": stride},
        "binarize": "none",
        "steps": {part: last - first for part, (first, last) in parts.items()},
        "sizes": {"train": len(x_train), "validation": len(x_val), "test": len(x_test)},
        "image_shape": list(x_train.shape[1:]),
    }
    if anomalous is not None:
        record["sizes"]["test_anomalous"] = int(test_held.sum())
        record["left_out_windows"] = dropped
    kept = Series(
        length,
        stride,
        steps[val_first:n_train],
        steps[n_train:],
        None if anomalous is None else anomalous[n_train:],
        n_train,
    )
    return dataset.Dataset(x_train, None, x_val, None, x_test, None, record, test_held, transform.to_dict(), kept)


def _series_parts(n_steps, section, path):
    """{part: (first, last) step} of a series split in time; each part must hold one window (the validation
    part calibrates the step threshold)."""
    length = section.window.length
    n_train = n_steps - int(round(n_steps * section.test_split))
    n_val = int(round(n_train * section.validation_split))
    parts = {"training": (0, n_train - n_val), "validation": (n_train - n_val, n_train), "test": (n_train, n_steps)}
    for part, (first, last) in parts.items():
        if last - first < length:
            raise DataError(
                f"{path}: the {part} part (steps {first} to {last - 1}; data.test_split, data.validation_split) "
                f"is {last - first} steps, shorter than one window (data.window.length {length})"
            )
    return parts


def _cut_series(steps, anomalous, parts, length, stride):
    """{part: (windows, which hold a labelled anomaly or None)} and how many training and validation
    windows were left out for holding one."""
    by_part, dropped = {}, 0
    for part, (first, last) in parts.items():
        windows, at = cut(steps[first:last], length, stride)
        held = None if anomalous is None else anomalous_windows(anomalous[first:last], at, length)
        if held is not None and part != "test":
            windows, dropped, held = windows[~held], dropped + int(held.sum()), None
        by_part[part] = (windows, held)
    return by_part, dropped


def step_labels(frame, label, path):
    """Which steps the label column marks anomalous (1 or true; 0 or false: normal), or None."""
    if label is None:
        return None
    text = frame[label].astype(str).str.strip().str.lower()
    bad = ~text.isin(["0", "1", "0.0", "1.0", "true", "false"])
    if bad.any():
        from kerasae.data import tables

        at = int(np.argmax(bad.to_numpy()))
        raise DataError(
            f"{path}: column '{label}', {tables.line_of(frame, at, path)}: '{frame[label].iloc[at]}' is not a step "
            "label (1 or true: anomalous; 0 or false: normal)"
        )
    return text.isin(["1", "1.0", "true"]).to_numpy()

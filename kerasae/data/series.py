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

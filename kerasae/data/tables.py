"""Tables: rows of a CSV or Parquet file as vectors, through a transform fitted on the training rows.

Numeric columns are standardized with the training rows' mean and standard deviation; categorical
columns are one-hot encoded over the categories the training rows hold (an unseen category at score
time encodes as all zeros); missing values are refused, imputed (the training mean, or a category of
their own) or their rows dropped, as the recipe's `data.missing` says. The fitted transform is plain
values (`to_dict`), written into the zoo entry as `transform.json`, so that `kerasae score` applies
the same one to new rows. A row becomes a 1 x D single-channel "image" for the models: dense
networks flatten it. pandas reads the files (pyarrow for Parquet).
"""

import dataclasses
import math
import os

import numpy as np

from kerasae.data import dataset
from kerasae.errors import DataError

TRANSFORM_FILE = "transform.json"
MISSING_CATEGORY = "(missing)"


def read(path):
    """The table at `path` (.csv, .parquet) as a pandas DataFrame."""
    try:
        import pandas as pd
    except ImportError:
        raise DataError(
            f"{path}: reading tables needs pandas (and pyarrow for Parquet): pip install 'kerasae[tables]'"
        ) from None
    try:
        if path.lower().endswith((".parquet", ".pq")):
            return pd.read_parquet(path)
        return pd.read_csv(path, skipinitialspace=True)
    except ImportError as e:
        raise DataError(f"{path}: {e}; pip install 'kerasae[tables]'") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the table ({str(e).splitlines()[0]})") from None


def line_of(frame, position, path):
    """Where the row at `position` is, in the user's words: a CSV's line (the header is line 1)."""
    if path.lower().endswith(".csv"):
        return f"line {int(frame.index[position]) + 2}"
    return f"row {int(frame.index[position]) + 1}"


def require_columns(frame, columns, path, what="column"):
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        have = ", ".join(map(str, frame.columns[:12])) + (", ..." if len(frame.columns) > 12 else "")
        raise DataError(f"{path}: no {what} '{missing[0]}' (the file has {have})")


@dataclasses.dataclass
class Transform:
    """Standardization of numeric columns and one-hot encoding of categorical ones, fitted once.

    Attributes:
        numeric: {column: [mean, std]} of the training rows (std 1 where a column is constant).
        categorical: {column: [categories]} seen in the training rows, in order.
        missing: "error", "impute" or "drop" (`data.missing`).
    """

    numeric: dict
    categorical: dict
    missing: str = "error"

    @classmethod
    def fit(cls, frame, columns, categorical, missing):
        """Fits on the training rows `frame` (already checked by `clean`)."""
        numeric = {}
        for column in (c for c in columns if c not in categorical):
            values = frame[column].to_numpy(dtype=np.float64)
            mean, std = np.nanmean(values), np.nanstd(values)
            numeric[column] = [float(mean), float(std) if std > 1e-12 else 1.0]
        cats = {column: sorted(set(frame[column].astype(str))) for column in categorical}
        return cls(numeric, cats, missing)

    @property
    def columns(self):
        return [*self.numeric, *self.categorical]

    @property
    def width(self):
        """Numbers per row after the transform."""
        return len(self.numeric) + sum(len(c) for c in self.categorical.values())

    def feature_names(self):
        return [*self.numeric, *(f"{col}={cat}" for col, cats in self.categorical.items() for cat in cats)]

    def apply(self, frame, path):
        """float32 rows (N, 1, D, 1) of the columns of `frame`, transformed, one per row."""
        require_columns(frame, self.columns, path)
        # Rows to score keep their places: a gap is an error where training dropped such rows.
        missing = "error" if self.missing == "drop" else self.missing
        frame = clean(frame, self.columns, list(self.categorical), missing, path)
        parts = []
        for column, (mean, std) in self.numeric.items():
            values = frame[column].to_numpy(dtype=np.float64)
            parts.append(((np.where(np.isnan(values), mean, values) - mean) / std)[:, None])
        for column, categories in self.categorical.items():
            values = frame[column].astype(str).to_numpy()
            parts.append((values[:, None] == np.asarray(categories)[None, :]).astype(np.float64))
        rows = np.concatenate(parts, axis=1) if parts else np.zeros((len(frame), 0))
        return rows.astype(np.float32).reshape(len(frame), 1, -1, 1)

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        return cls(**values)


def clean(frame, columns, categorical, missing, path):
    """The rows of `frame` with checked values: numbers in numeric columns (a number in text is
    read as one), no inf; missing values refused, kept for imputation, or their rows dropped.
    Names the file, the column and the line of the first bad value."""
    import pandas as pd

    frame = frame[columns].copy()
    for column in columns:
        if column in categorical:
            if missing == "impute":
                frame[column] = frame[column].where(frame[column].notna(), MISSING_CATEGORY)
            continue
        numbers = pd.to_numeric(frame[column], errors="coerce").astype(np.float64)
        text = numbers.isna() & frame[column].notna()
        if text.any():
            at = int(np.argmax(text.to_numpy()))
            raise DataError(
                f"{path}: column '{column}', {line_of(frame, at, path)}: '{frame[column].iloc[at]}' is not a number "
                "(list the column in data.categorical if it holds categories)"
            )
        infinite = np.isinf(numbers.to_numpy())
        if infinite.any():
            at = int(np.argmax(infinite))
            raise DataError(f"{path}: column '{column}', {line_of(frame, at, path)}: {numbers.iloc[at]} is not finite")
        frame[column] = numbers
    absent = frame.isna()
    if missing != "impute" and absent.to_numpy().any():
        if missing == "drop":
            return frame[~absent.any(axis=1)]
        at, column = _first(absent)
        raise DataError(
            f"{path}: column '{column}', {line_of(frame, at, path)}: missing value "
            "(set data.missing: impute or drop to accept them)"
        )
    return frame


def _first(mask):
    """(row position, column) of the first True of a boolean DataFrame, row by row."""
    values = mask.to_numpy()
    at = int(np.argmax(values.any(axis=1)))
    return at, mask.columns[int(np.argmax(values[at]))]


def split(n, test_split, seed=0):
    """(training positions, test positions): a fixed shuffle, the first `test_split` share held out."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(math.floor(n * test_split)))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def load_dict(values):
    """A `Transform` from its plain values (`Dataset.transform`, `transform.json`)."""
    return Transform.from_dict(values)


def load(folder):
    """The entry's fitted transform, or None for an entry of images."""
    import json

    path = os.path.join(folder, TRANSFORM_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return Transform.from_dict(json.load(f))


def load_table(section, seed=0):
    """Rows of a CSV or Parquet file: a fixed `test_split` held out, the transform fitted on the
    training rows (after `classes` keeps the normal ones), rows as 1 x D single-channel images."""
    path = section.path
    frame = read(path)
    label = section.label_column
    if label is not None:
        require_columns(frame, [label], path, what="label column (data.label_column)")
    columns = section.columns or [c for c in frame.columns if c != label]
    require_columns(frame, columns, path)
    require_columns(frame, section.categorical, path, what="categorical column")
    if len(frame) < 4:
        raise DataError(f"{path}: {len(frame)} rows; a table needs at least 4 (training, validation and test)")
    train_rows, test_rows = split(len(frame), section.test_split)
    train, test = frame.iloc[train_rows], frame.iloc[test_rows]
    train, anomalous = _normal_rows(train, test, section.classes, label, path)
    # Rows checked (the first bad value named), and with `missing: drop` those with a gap left out.
    checked = clean(train, columns, section.categorical, section.missing, path)
    train = train.loc[checked.index]
    kept = clean(test, columns, section.categorical, section.missing, path).index
    if anomalous is not None:
        anomalous = anomalous[test.index.get_indexer(kept)]
    test = test.loc[kept]
    transform = Transform.fit(checked, columns, section.categorical, section.missing)
    x_train, x_test = transform.apply(train, path), transform.apply(test, path)
    y_train, y_test = (_row_classes(frame, part, label) for part in (train, test))
    n_fit = len(x_train) - dataset.validation_size(len(x_train), section)
    record = {
        "name": "table",
        "source": os.path.basename(path),
        "sha256": {"file": dataset.file_sha256(path)},
        "columns": transform.feature_names(),
        "binarize": "none",
        "sizes": {"train": n_fit, "validation": len(x_train) - n_fit, "test": len(x_test)},
        "image_shape": list(x_train.shape[1:]),
    }
    if anomalous is not None:
        record["classes"] = list(section.classes)
        record["sizes"]["test_anomalous"] = int(anomalous.sum())
    return dataset.Dataset(
        x_train[:n_fit],
        None if y_train is None else y_train[:n_fit],
        x_train[n_fit:],
        None if y_train is None else y_train[n_fit:],
        x_test,
        y_test,
        record,
        anomalous,
        transform.to_dict(),
    )


def _normal_rows(train, test, classes, label, path):
    """(training rows of `classes`, which test rows are of the others); all rows and None without classes."""
    if not classes:
        return train, None
    if label is None:
        raise DataError("data.classes: needs data.label_column, the column that holds each row's class")
    wanted = {str(c) for c in classes}
    missing = sorted(wanted - set(train[label].astype(str)))
    if missing:
        raise DataError(f"data.classes: no training row of class '{missing[0]}' in column '{label}' of {path}")
    return train[train[label].astype(str).isin(wanted)], ~test[label].astype(str).isin(wanted).to_numpy()


def _row_classes(frame, rows, label):
    """Each row's class as an integer: its place among the column's values, sorted as text."""
    if label is None:
        return None
    names = sorted(set(frame[label].astype(str)))
    return np.searchsorted(names, rows[label].astype(str).to_numpy()).astype(np.int32)

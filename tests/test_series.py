"""Time series (`dataset: sequence`): windows cut in time order, conv layers along time, scores per
time step with a calibrated threshold stored in the entry, `kerasae score` on a series, and every bad
series refused with the file, column and line."""

import importlib.util
import os

import keras
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT, small_recipe

from kerasae import cli, data, layers
from kerasae.data import series, tables
from kerasae.errors import RecipeError
from kerasae.run import train
from kerasae.spec import recipe

LENGTH = 32


def _series(steps=1600, spikes=()):
    """Two seasonal sensors (period 48) with noise; +6 on the first at each spike step; labels."""
    rng = np.random.default_rng(0)
    t = np.arange(steps)
    a = np.sin(2 * np.pi * t / 48) + rng.normal(0, 0.1, steps)
    b = 0.5 * np.cos(2 * np.pi * t / 48) + rng.normal(0, 0.1, steps)
    label = np.zeros(steps, dtype=int)
    for at in spikes:
        a[at : at + 3] += 6.0
        label[at : at + 3] = 1
    return pd.DataFrame({"a": a, "b": b, "anomaly": label})


@pytest.fixture
def series_csv(tmp_path):
    path = tmp_path / "series.csv"
    _series(spikes=(300, 1300, 1450, 1530)).to_csv(path, index=False)
    return str(path)


def _recipe(path, **data_keys):
    spec = small_recipe("ae", epochs=15, model={"latent_dim": 4, "output_activation": "linear"})
    spec["model"]["encoder"] = [
        {"filters": 8, "kernel_size": 5, "strides": 2},
        {"filters": 8, "kernel_size": 3, "strides": 2},
    ]
    spec["loss"] = {"type": "mse"}
    spec["data"] = {"dataset": "sequence", "path": path, "columns": ["a", "b"], "label_column": "anomaly"}
    spec["data"] |= {"window": {"length": LENGTH, "stride": 2}, "test_split": 0.25, "validation_split": 0.2} | data_keys
    spec["name"] = "test-series"
    spec["outputs"]["figures"] = ["series"]
    spec["score"] = {"quantile": 0.995}
    return spec


@pytest.mark.once
def test_windows_cover_every_step_and_step_scores_average_the_windows_that_hold_them():
    at = series.starts(10, 4, 3)
    assert at.tolist() == [0, 3, 6]  # the last window ends on the last step
    assert series.starts(11, 4, 3).tolist() == [0, 3, 6, 7]
    values = np.arange(22, dtype=np.float32).reshape(11, 2)
    windows, at = series.cut(values, 4, 3)
    assert windows.shape == (4, 1, 4, 2)
    np.testing.assert_array_equal(windows[3, 0], values[7:11])
    labels = np.zeros(11, dtype=bool)
    labels[6] = True  # in the windows starting at 3 and 6
    assert series.anomalous_windows(labels, at, 4).tolist() == [False, True, True, False]
    assert series.events([0, 1, 1, 0, 0, 1]) == [(1, 3), (5, 6)]

    class Zeros:  # reconstructs nothing: a step's error is the same in every window, 1/2 its squared values
        def reconstruct(self, x):
            return np.zeros_like(x)

    np.testing.assert_allclose(series.step_scores(Zeros(), values, 4), 0.5 * (values**2).sum(axis=1), rtol=1e-6)


@pytest.mark.once
def test_a_series_is_split_in_time_standardized_on_its_training_part_and_cleaned_of_known_anomalies(series_csv):
    spec = recipe.validate(_recipe(series_csv))
    d = data.load(spec.data)
    steps = d.record["steps"]
    assert steps == {"training": 960, "validation": 240, "test": 400}
    assert d.image_shape == (1, LENGTH, 2)
    assert d.series.test.shape == (400, 2) and d.series.test_first == 1200
    raw = pd.read_csv(series_csv)
    # The transform is the training part's: there its columns have mean 0 and deviation 1.
    mean, std = raw[["a", "b"]][:960].mean(), raw[["a", "b"]][:960].std(ddof=0)
    np.testing.assert_allclose(d.series.test, ((raw[["a", "b"]][1200:] - mean) / std).to_numpy(), atol=1e-5)
    # The spike at 300 is labelled: no training window holds it; each test window knows whether it holds one.
    assert d.record["left_out_windows"] == len([s for s in series.starts(960, LENGTH, 2) if 300 - LENGTH < s <= 302])
    assert d.series.test_anomalous.sum() == 9 and d.anomalous.any() and not d.anomalous.all()


def test_conv_layers_of_a_series_run_along_time_as_keras_conv1d_does():
    x = np.random.default_rng(0).normal(size=(3, 1, 20, 2)).astype("float32")
    conv = layers.Conv2D(4, (1, 5), strides=(1, 2), padding="same")
    up = layers.Conv2DTranspose(2, (1, 5), strides=(1, 2), padding="same")
    y = conv(x)
    ref = keras.layers.Conv1D(4, 5, strides=2, padding="same")
    ref.build((None, 20, 2))
    ref.set_weights([conv.get_weights()[0][0], conv.get_weights()[1]])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(y)[:, 0], keras.ops.convert_to_numpy(ref(x[:, 0])), atol=1e-5)
    z = up(y)
    ref_up = keras.layers.Conv1DTranspose(2, 5, strides=2, padding="same")
    ref_up.build((None, 10, 4))
    ref_up.set_weights([up.get_weights()[0][0], up.get_weights()[1]])
    expected = keras.ops.convert_to_numpy(ref_up(keras.ops.convert_to_numpy(y)[:, 0]))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(z)[:, 0], expected, atol=1e-5)


def test_a_series_trains_flags_its_spikes_and_scores_a_new_series_step_by_step(series_csv, zoo_dir, tmp_path, capsys):
    entry, metrics = train.run(recipe.validate(_recipe(series_csv)), zoo_dir, verbose=0)
    history = metrics["train"]
    # Standardized columns: an untrained model's loss, 1/2 the sum of squares of a window, is near LENGTH.
    assert history["loss"] < 0.1 * LENGTH
    steps = metrics["evaluation"]["anomaly"]["steps"]
    # The three labelled spikes of the test part are each flagged, with few false alarms.
    assert steps["events"] == 3 and steps["events_detected"] == 1.0
    assert steps["auroc"] > 0.95
    stored = series.load(entry)
    assert stored["window"] == {"length": LENGTH, "stride": 2} and stored["threshold"] == steps["threshold"]
    assert os.path.isfile(os.path.join(entry, tables.TRANSFORM_FILE))
    assert os.path.isfile(os.path.join(entry, "figures", "series.png"))

    # A new series, columns in another order, spikes elsewhere: a score per step, flagged above the threshold.
    new = _series(900, spikes=(200, 640))[["b", "anomaly", "a"]]
    path = tmp_path / "new.csv"
    new.to_csv(path, index=False)
    out = tmp_path / "scores.csv"
    capsys.readouterr()
    assert cli.main(["score", entry, "--input", str(path), "--labels", "anomaly", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "900 time steps scored" in printed and "with a flagged step: 100% of 2" in printed, printed
    scores = pd.read_csv(out)
    assert len(scores) == 900 and scores["label"].sum() == 6
    assert (scores["flagged"] == (scores["score"] > stored["threshold"])).all()
    assert scores.loc[scores["label"] == 1, "score"].min() > scores.loc[scores["label"] == 0, "score"].median()
    # Away from the spikes (no window holds one) false alarms are about as rare as the quantile says.
    near = np.convolve(scores["label"], np.ones(2 * LENGTH - 1), mode="same") > 0
    assert scores["flagged"][~near].mean() < 0.02
    # The labels from a file give the same numbers.
    labels = tmp_path / "labels.csv"
    new[["anomaly"]].to_csv(labels, index=False)
    assert cli.main(["score", entry, "--input", str(path), "--labels", str(labels)]) == 0
    assert printed.split("\n")[2] == capsys.readouterr().out.split("\n")[2]  # the AUROC line


@pytest.mark.once
def test_bad_series_exit_2_with_the_file_column_and_line_and_write_nothing(series_csv, tmp_path, zoo_dir, capsys):
    frame = pd.read_csv(series_csv)
    text = frame.astype({"b": object})
    text.loc[9, "b"] = "n/a?"
    gap, infinite, label = frame.copy(), frame.copy(), frame.astype({"anomaly": object})
    gap.loc[20, "a"] = np.nan
    infinite.loc[3, "a"] = -np.inf
    label.loc[7, "anomaly"] = "maybe"
    cases = {
        "text.csv": (text, {}, "text.csv: column 'b', line 11: 'n/a?' is not a number"),
        "gap.csv": (gap, {}, "gap.csv: column 'a', line 22: missing value"),
        "inf.csv": (infinite, {}, "inf.csv: column 'a', line 5: -inf is not finite"),
        "cols.csv": (frame, {"columns": ["a", "zz"]}, "cols.csv: no column 'zz' (the file has a, b, anomaly)"),
        "label.csv": (label, {}, "label.csv: column 'anomaly', line 9: 'maybe' is not a step label"),
        "short.csv": (frame.head(20), {}, "short.csv: 20 time steps, shorter than one window (data.window.length 32)"),
        "part.csv": (
            frame.head(150),
            {},
            "part.csv: the validation part (steps 90 to 111; data.test_split, data.validation_split) is 22 steps",
        ),
    }
    for name, (rows, keys, message) in cases.items():
        path = str(tmp_path / name)
        rows.to_csv(path, index=False)
        recipe_path = tmp_path / f"{name}.yaml"
        recipe_path.write_text(yaml.safe_dump(_recipe(path, **keys)))
        assert cli.main(["train", str(recipe_path), "--zoo", zoo_dir, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not os.path.exists(zoo_dir) or not [e for e in os.listdir(zoo_dir) if not e.startswith(".")]


@pytest.mark.once
def test_scoring_a_series_names_a_missing_column_a_short_series_and_bad_labels(series_csv, zoo_dir, tmp_path, capsys):
    entry, _ = train.run(recipe.validate(_recipe(series_csv) | {"train": {"epochs": 1}}), zoo_dir, verbose=0)
    frame = pd.read_csv(series_csv)
    cases = {
        "fewer.csv": (frame.drop(columns=["b"]), [], "fewer.csv: no column 'b'"),
        "short.csv": (frame.head(10), [], "short.csv: 10 time steps, shorter than one window"),
        "labels.csv": (frame, ["--labels", "kind"], "kind: cannot read"),
    }
    for name, (rows, more, message) in cases.items():
        path = tmp_path / name
        rows.to_csv(path, index=False)
        out = tmp_path / f"{name}.scores.csv"
        assert cli.main(["score", entry, "--input", str(path), *more, "--output", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()
    images = tmp_path / "x.npy"
    np.save(images, np.zeros((2, 28, 28)))
    assert cli.main(["score", entry, "--input", str(images)]) == 2
    assert "was trained on a series; give it as .csv or .parquet" in capsys.readouterr().err


@pytest.mark.once
def test_a_sequence_recipe_needs_a_window_and_refuses_what_needs_images(series_csv):
    spec = _recipe(series_csv)
    del spec["data"]["window"]
    with pytest.raises(RecipeError, match="window: dataset 'sequence' needs window.length"):
        recipe.validate(spec)
    spec = _recipe(series_csv, missing="drop")
    with pytest.raises(RecipeError, match="missing: a series keeps every time step"):
        recipe.validate(spec)
    spec = _recipe(series_csv)
    spec["outputs"]["figures"] = ["reconstructions", "series"]
    spec["model"]["output_activation"] = "sigmoid"
    with pytest.raises(RecipeError) as e:
        recipe.validate(spec)
    for message in (
        "model.output_activation: a series' standardized columns need 'linear'",
        "outputs.figures: 'reconstructions' needs images; a series' windows get loss, latent, scores, series",
    ):
        assert message in str(e.value)
    spec = _recipe(series_csv, window={"length": 64})
    spec["outputs"]["figures"] = None
    assert recipe.validate(spec).outputs.figures == ["loss", "latent", "scores", "series"]


@pytest.mark.once
def test_the_shipped_series_is_the_one_its_script_writes(tmp_path):
    script = os.path.join(ROOT, "recipes", "data", "make_sensor.py")
    module_spec = importlib.util.spec_from_file_location("make_sensor", script)
    make_sensor = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(make_sensor)
    make_sensor.main(str(tmp_path / "sensor.csv"))
    with open(os.path.join(ROOT, "recipes", "data", "sensor.csv")) as shipped:
        assert (tmp_path / "sensor.csv").read_text() == shipped.read()
    frame = pd.read_csv(tmp_path / "sensor.csv")
    assert len(frame) == make_sensor.STEPS and frame["anomaly"][: make_sensor.TEST_FROM].sum() == 0
    assert len(series.events(frame["anomaly"])) == 8

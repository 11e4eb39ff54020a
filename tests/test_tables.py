"""Tables (`dataset: table`): rows of CSV / Parquet through a transform fitted on the training rows and
stored in the entry, anomaly scores on new rows with `kerasae score`, and every bad table refused with
the file, column and line."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import small_recipe

from kerasae import cli, data
from kerasae.data import tables
from kerasae.errors import DataError, RecipeError
from kerasae.run import train
from kerasae.spec import recipe


def _rows(n, seed, odd_share=0.0):
    """Rows of two correlated numbers, a category and a kind; 'odd' rows break the correlation."""
    rng = np.random.default_rng(seed)
    a = rng.normal(10.0, 2.0, n)
    odd = rng.random(n) < odd_share
    b = np.where(odd, rng.normal(0.0, 4.0, n), 3.0 * a + rng.normal(0.0, 0.5, n))
    return pd.DataFrame(
        {"a": a, "kind": np.where(odd, "odd", "normal"), "b": b, "colour": rng.choice(["red", "blue"], n)}
    )


@pytest.fixture
def table_csv(tmp_path):
    path = tmp_path / "rows.csv"
    _rows(600, 0, odd_share=0.15).to_csv(path, index=False)
    return str(path)


def _recipe(path, **data_keys):
    spec = small_recipe("ae", epochs=30, model={"encoder": [16], "latent_dim": 1, "output_activation": "linear"})
    spec["loss"] = {"type": "mse"}
    spec["data"] = {"dataset": "table", "path": path, "label_column": "kind", "classes": ["normal"]}
    spec["data"] |= {"categorical": ["colour"], "validation_split": 0.2} | data_keys
    spec["name"] = "test-table"
    spec["outputs"]["figures"] = ["loss", "latent"]
    spec["score"] = {"quantile": 0.95}
    return spec


def test_a_table_trains_keeps_its_transform_and_scores_new_rows(table_csv, zoo_dir, tmp_path, capsys):
    entry, metrics = train.run(recipe.validate(_recipe(table_csv)), zoo_dir, verbose=0)
    transform = tables.load(entry)
    assert transform.feature_names() == ["a", "b", "colour=blue", "colour=red"]
    # Fitted on the normal training rows only: their standardized columns have mean 0 and deviation 1.
    dataset = data.load(recipe.validate(_recipe(table_csv)).data)
    fitted = np.concatenate([dataset.x_train, dataset.x_val]).reshape(-1, 4)
    np.testing.assert_allclose(fitted[:, :2].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(fitted[:, :2].std(axis=0), 1.0, atol=1e-4)
    assert metrics["evaluation"]["anomaly"]["auroc"] > 0.9
    # New rows, columns in another order with one more: the stored transform gives the same numbers.
    new = _rows(300, 5, odd_share=0.3)
    rows = tmp_path / "new.csv"
    new[["colour", "b", "kind", "a"]].assign(extra=1).to_csv(rows, index=False)
    labels = tmp_path / "labels.npy"
    np.save(labels, (new["kind"] == "odd").to_numpy().astype(int))
    out = tmp_path / "scores.csv"
    assert cli.main(["score", entry, "--input", str(rows), "--labels", str(labels), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    auroc = float(printed.split("AUROC ")[1].split(",")[0])
    assert auroc > 0.9, printed
    import kerasae

    model = kerasae.load(entry)
    scores = pd.read_csv(out)["score"].to_numpy()
    np.testing.assert_allclose(scores, model.score(transform.apply(new, "new")), rtol=1e-4)
    with open(os.path.join(entry, "recipe.yaml")) as f:
        assert yaml.safe_load(f)["data"]["categorical"] == ["colour"]


def test_a_parquet_table_reads_as_its_csv(table_csv, tmp_path):
    parquet = str(tmp_path / "rows.parquet")
    pd.read_csv(table_csv).to_parquet(parquet)
    from_csv = data.load(recipe.validate(_recipe(table_csv)).data)
    from_parquet = data.load(recipe.validate(_recipe(parquet)).data)
    np.testing.assert_allclose(from_parquet.x_test, from_csv.x_test, rtol=1e-6)


@pytest.mark.once
def test_missing_values_are_refused_imputed_or_dropped(table_csv, tmp_path):
    frame = pd.read_csv(table_csv)
    frame.loc[5, "a"] = np.nan
    frame.loc[7, "colour"] = np.nan
    path = str(tmp_path / "gaps.csv")
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"gaps.csv: column 'a', line 7: missing value \(set data.missing"):
        data.load(recipe.validate(_recipe(path)).data)
    full = data.load(recipe.validate(_recipe(table_csv)).data)
    imputed = data.load(recipe.validate(_recipe(path, missing="impute")).data)
    dropped = data.load(recipe.validate(_recipe(path, missing="drop")).data)
    total = {name: len(d.x_train) + len(d.x_val) + len(d.x_test) for name, d in [("full", full), ("drop", dropped)]}
    assert total["drop"] in (total["full"] - 1, total["full"] - 2)  # the two rows, less any of class odd
    assert tables.load_dict(imputed.transform).categorical["colour"] == ["(missing)", "blue", "red"]


@pytest.mark.once
def test_bad_tables_exit_2_with_the_file_column_and_line_and_write_nothing(table_csv, tmp_path, zoo_dir, capsys):
    frame = pd.read_csv(table_csv)
    text = frame.astype({"b": object})
    text.loc[9, "b"] = "n/a?"
    infinite = frame.copy()
    infinite.loc[3, "a"] = np.inf
    cases = {
        "text.csv": (text, {}, "text.csv: column 'b', line 11: 'n/a?' is not a number"),
        "inf.csv": (infinite, {}, "inf.csv: column 'a', line 5: inf is not finite"),
        "cols.csv": (frame, {"columns": ["a", "zz"]}, "cols.csv: no column 'zz' (the file has a, kind, b, colour)"),
        "label.csv": (frame, {"label_column": "type"}, "label.csv: no label column (data.label_column) 'type'"),
        "class.csv": (frame, {"classes": ["ok"]}, "data.classes: no training row of class 'ok' in column 'kind'"),
        "short.csv": (frame.head(3), {}, "short.csv: 3 rows; a table needs at least 4"),
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
def test_scoring_rows_without_a_trained_column_names_it(table_csv, zoo_dir, tmp_path, capsys):
    entry, _ = train.run(recipe.validate(_recipe(table_csv) | {"train": {"epochs": 1}}), zoo_dir, verbose=0)
    rows = tmp_path / "fewer.csv"
    pd.read_csv(table_csv).drop(columns=["b"]).to_csv(rows, index=False)
    assert cli.main(["score", entry, "--input", str(rows)]) == 2
    assert f"{rows}: no column 'b'" in capsys.readouterr().err
    images = tmp_path / "x.npy"
    np.save(images, np.zeros((2, 28, 28)))
    assert cli.main(["score", entry, "--input", str(images)]) == 2
    assert "was trained on a table; give rows as .csv or .parquet" in capsys.readouterr().err


@pytest.mark.once
def test_a_table_recipe_refuses_what_needs_images(table_csv):
    spec = _recipe(table_csv)
    spec["model"] |= {"encoder": [{"filters": 4}], "output_activation": "sigmoid"}
    spec["loss"] = {"type": "bce"}
    spec["outputs"]["figures"] = ["reconstructions"]
    with pytest.raises(RecipeError) as error:
        recipe.validate(spec)
    for message in (
        "model.encoder: a table's rows take dense layers",
        "loss.type: a table's standardized columns are not in [0, 1]; use 'mse'",
        "model.output_activation: a table's standardized columns need 'linear'",
        "outputs.figures: 'reconstructions' needs images; a table's rows get loss, latent, scores",
    ):
        assert message in str(error.value)
    assert recipe.validate(_recipe(table_csv) | {"outputs": {"figures": None}}).outputs.figures == [
        "loss",
        "latent",
        "scores",
    ]
    with pytest.raises(RecipeError, match="data.path: dataset 'table' needs the CSV or Parquet file"):
        recipe.validate(_recipe(None))
    assert json.loads(json.dumps(recipe.validate(_recipe(table_csv)).to_dict()))["data"]["missing"] == "error"

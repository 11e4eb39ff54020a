"""The `kerasae` command line: the only module that prints.

User mistakes (`KerasaeError`) become one line per problem on stderr and exit
code 2, with no traceback; `--debug` shows tracebacks.
"""

import argparse
import json
import os
import sys

from kerasae.errors import KerasaeError, TrainingStopped

EXIT_USER_ERROR = 2


def _parser():
    parser = argparse.ArgumentParser(prog="kerasae", description="Train autoencoders from YAML recipes.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    _training_commands(sub)
    _zoo_commands(sub)
    _image_commands(sub)
    serve = sub.add_parser("serve", help="the zoo as a local web page: draw, slide, interpolate, sample")
    serve.add_argument("--zoo", help="zoo folder (default: $KERASAE_ZOO, else ./zoo)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0: any free port)")
    return parser


def _training_commands(sub):
    train = sub.add_parser("train", help="train a recipe and write its zoo entry")
    train.add_argument("recipe")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override a recipe key, e.g. --set train.epochs=5 (repeatable)",
    )
    train.add_argument("--zoo", help="zoo folder (default: $KERASAE_ZOO, else ./zoo)")
    train.add_argument(
        "--overwrite", action="store_true", help="replace an existing entry (and start over instead of resuming)"
    )
    train.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    train.add_argument("--quiet", action="store_true", help="no progress output")

    validate = sub.add_parser("validate", help="check recipes without training")
    validate.add_argument("recipes", nargs="+")
    validate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides")
    validate.add_argument("--print", action="store_true", dest="show", help="print the resolved recipe")


def _zoo_commands(sub):
    zoo_cmd = sub.add_parser("zoo", help="inspect the zoo")
    zoo_sub = zoo_cmd.add_subparsers(dest="zoo_command", required=True)
    listing = zoo_sub.add_parser("list", help="list the entries as a table")
    listing.add_argument("--zoo")
    listing.add_argument("--json", action="store_true")

    show = zoo_sub.add_parser("show", help="an entry's recipe, data and test metrics")
    show.add_argument("entry", help="entry name or folder")
    show.add_argument("--zoo")
    show.add_argument("--json", action="store_true", help="print metrics.json")

    ev = sub.add_parser("eval", help="evaluate a zoo entry on its test data; updates metrics.json and cards")
    ev.add_argument("entry", help="entry name or folder")
    ev.add_argument("--nll-samples", type=int, help="importance samples per image (default: the recipe's)")
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON")
    ev.add_argument(
        "--keep-nll",
        action="store_true",
        help="re-evaluate all but the importance-sampled NLL, which keeps its stored value (hours at k = 5000)",
    )
    ev.add_argument("--zoo")

    export = sub.add_parser("export", help="write a serving export of a zoo entry (SavedModel or ONNX)")
    export.add_argument("entry", help="entry name or folder")
    export.add_argument("--format", choices=("tf_saved_model", "onnx"), default="tf_saved_model")
    export.add_argument("--output", help="folder to write (default: <entry>/saved_model or <entry>/onnx)")
    export.add_argument("--zoo")


OUTPUT_HELP = "a .png file: a grid to look at; a .npz file: the arrays ({arrays}) for further use"


def _image_commands(sub):
    denoise = sub.add_parser("denoise", help="denoise images with a zoo entry; writes a PNG grid or the arrays")
    denoise.add_argument("entry", help="entry name or folder")
    denoise.add_argument("--input", required=True, help=".npy or .npz (first array) of images")
    denoise.add_argument("--output", required=True, help=OUTPUT_HELP.format(arrays="input, [noisy,] output"))
    denoise.add_argument("--corrupt", action="store_true", help="corrupt the inputs with the model's noise first")
    denoise.add_argument("--zoo")

    sample = sub.add_parser("sample", help="draw images from a zoo entry; writes a PNG grid or the arrays")
    sample.add_argument("entry")
    sample.add_argument(
        "--sampler",
        choices=("prior", "gmm"),
        help="prior: N(0, I), for families trained towards it (the default there); gmm: a Gaussian mixture "
        "fitted to the training codes, for every family (the default elsewhere)",
    )
    sample.add_argument("--n", type=int, default=16)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument(
        "--digits", help="conditional families: comma-separated classes to draw, e.g. 0,1,2 (default: cycle)"
    )
    sample.add_argument("--output", required=True, help=OUTPUT_HELP.format(arrays="images, [labels]"))
    sample.add_argument("--zoo")

    score = sub.add_parser(
        "score",
        help="anomaly scores of images, rows or time steps with a zoo entry; flags those above its threshold",
    )
    score.add_argument("entry", help="entry name or folder")
    score.add_argument(
        "--input",
        required=True,
        help=".npy or .npz (first array) of images; an entry of a table: .csv or .parquet rows; of a series: "
        "the series as .csv or .parquet (a score per time step)",
    )
    score.add_argument(
        "--labels",
        help=".npy, .npz or .csv (one column): 1 for each anomalous item, 0 for a normal one; for a series, "
        "also a column of --input; prints AUROC, AUPRC and the confusion at the threshold",
    )
    score.add_argument("--output", help="a .csv file: item (a series: its time step), score, flagged[, label]")
    score.add_argument("--zoo")

    interp = sub.add_parser("interpolate", help="decode a walk between two test digits' codes")
    interp.add_argument("entry")
    interp.add_argument("--steps", type=int, default=10)
    interp.add_argument("--pairs", type=int, default=4, help="number of test-digit pairs (rows)")
    interp.add_argument("--output", required=True, help=OUTPUT_HELP.format(arrays="images (pairs, steps, ...), pairs"))
    interp.add_argument("--zoo")


def _validate(args):
    from kerasae.spec import recipe

    problems = 0
    for path in args.recipes:
        try:
            r = recipe.load(path, args.overrides)
        except KerasaeError as e:
            print(f"error: {e}", file=sys.stderr)
            problems += 1
            continue
        print(f"ok: {path} ({r.name}, family {r.model.family})")
        if args.show:
            import yaml

            print(yaml.safe_dump(r.to_dict(), sort_keys=False))
    return EXIT_USER_ERROR if problems else 0


def _train(args):
    from kerasae.spec import recipe
    from kerasae.store import zoo

    r = recipe.load(args.recipe, args.overrides)
    version = zoo.version_name(r.name, args.zoo, args.overwrite)
    if version != r.name:
        print(
            f"{zoo.entry_path(r.name, args.zoo)} exists: training into a new version, '{version}' "
            "(--overwrite replaces the entry instead)",
            flush=True,
        )
    from kerasae.run import train

    path, metrics = train.run(
        r, args.zoo, overwrite=args.overwrite, verbose=0 if args.quiet else None, resume=args.resume
    )
    if path is None:
        print(f"trained '{version}'; the run's main process (JAX process 0, the TensorFlow chief) writes its zoo entry")
        return 0
    for split in ("train", "validation", "test"):
        if not metrics[split]:  # no validation split
            continue
        values = ", ".join(f"{k} {v:.3f}" for k, v in metrics[split].items())
        print(f"  {split:<10} {values}")
    print(f"  ({metrics['units']}; {metrics['train_seconds']:.1f} s on {metrics['versions']['backend']})")
    print(f"wrote {path}")
    return 0


def _eval(args):
    from kerasae.run import entry
    from kerasae.store import zoo

    path = zoo.resolve(args.entry, args.zoo)
    zoo.check_entry(path)
    if args.nll_samples is not None and args.nll_samples < 0:
        raise KerasaeError(f"--nll-samples must be >= 0, got {args.nll_samples}")
    if args.keep_nll and args.nll_samples is not None:
        raise KerasaeError("--keep-nll keeps the stored NLL: it takes no --nll-samples")
    metrics = entry.refresh(path, args.nll_samples, keep_nll=args.keep_nll)
    if args.json:
        print(json.dumps(metrics["evaluation"], indent=2))
        return 0
    print(f"{metrics['name']} (test set, {metrics['data']['sizes']['test']} images)")
    _print_metrics(metrics)
    return 0


def _print_metrics(metrics):
    from kerasae.assess import cards

    rows = [(name, cards.fmt(value), unit) for name, value, unit in cards.metric_rows(metrics)]
    width = max(len(name) for name, _, _ in rows)
    for name, value, unit in rows:
        print(f"  {name:<{width}}  {value:>10}  {unit}")


def _zoo_list(args):
    from kerasae.store import zoo

    rows = zoo.entries(args.zoo)
    if args.json:
        print(json.dumps({name: m for name, m in rows}, indent=2))
        return 0
    if not rows:
        print(f"no entries in {zoo.root(args.zoo)}")
        return 0
    header = ("name", "family", "latent", "data", "test loss", "backend", "train s")
    table = [header] + [
        (
            name,
            m.get("family", "?"),
            str(m.get("latent_dim", "?")),
            m.get("data", {}).get("name", "?"),
            f"{m.get('test', {}).get('loss', float('nan')):.3f}",
            m.get("versions", {}).get("backend", "?"),
            f"{m.get('train_seconds', 0):.0f}",
        )
        for name, m in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def _zoo_show(args):
    from kerasae.store import zoo

    entry = zoo.resolve(args.entry, args.zoo)
    zoo.check_entry(entry)
    metrics = zoo.read_metrics(entry)
    if args.json:
        print(json.dumps(metrics, indent=2))
        return 0
    data, versions = metrics["data"], metrics["versions"]
    print(f"{metrics['name']} ({entry})")
    print(
        f"  family {metrics['family']}, latent {metrics['latent_dim']}; {metrics['epochs']} epochs in "
        f"{metrics['train_seconds']:.0f} s on {versions['backend']} (Keras {versions['keras']})"
    )
    print(
        f"  data {data['name']} from {data['source']}, binarize {data['binarize']}; "
        f"{data['sizes']['train']} train / {data['sizes']['validation']} validation / {data['sizes']['test']} test"
    )
    _print_metrics(metrics)
    figures = (
        sorted(f.removesuffix(".png") for f in os.listdir(os.path.join(entry, zoo.FIGURES_DIR)) if f.endswith(".png"))
        if os.path.isdir(os.path.join(entry, zoo.FIGURES_DIR))
        else []
    )
    print(f"  figures: {', '.join(figures) or 'none'}; card: {os.path.join(entry, zoo.CARD_FILE)}")
    return 0


def _load_images(path):
    import numpy as np

    from kerasae.data.dataset import as_images
    from kerasae.errors import DataError

    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    if hasattr(loaded, "files"):
        if not loaded.files:
            raise DataError(f"{path}: the .npz file holds no arrays")
        loaded = loaded[loaded.files[0]]
    return as_images(loaded, os.path.basename(path), path)


def _denoise(args):
    from kerasae.store import zoo

    model = zoo.load(args.entry, args.zoo)
    if model.corruption is None:
        raise KerasaeError(
            f"{args.entry}: this {type(model).__name__} was trained without corruption, so it does "
            "not denoise; use an entry whose recipe sets corruption (a denoising family, or any family trained with it)"
        )
    x = _load_images(args.input)
    if not args.output.lower().endswith(".npz"):
        x = x[:16]  # the grid shows 16
    arrays = {"input": x}
    if args.corrupt:
        x = arrays["noisy"] = model.corrupt(x)
    arrays["output"] = model.denoise(x)
    _write_images(args.output, f"{args.entry}: denoising", list(arrays.items()), arrays)
    return 0


def _score(args):
    from kerasae import anomaly
    from kerasae.assess import metric_table
    from kerasae.data import series
    from kerasae.store import zoo

    model = zoo.load(args.entry, args.zoo)
    folder = zoo.resolve(args.entry, args.zoo)
    if series.load(folder) is not None:
        return _score_series(args, model, folder)
    x = _load_items(args.input, folder)
    if x.shape[1:] != model.image_shape:
        raise KerasaeError(
            f"{args.input}: images of shape {x.shape[1:]}, but {args.entry} takes {tuple(model.image_shape)}"
        )
    truth = None if args.labels is None else _read_truth(args.labels, len(x))
    scores = model.score(x, verbose=1 if sys.stdout.isatty() and len(x) > 10_000 else 0)
    threshold = model.threshold
    flags = None if threshold is None else scores > threshold
    if args.output:
        _write_scores(args.output, scores, flags, truth)
    what = metric_table.SCORE_NAMES[model.score_kind]
    print(f"{args.entry}: {len(x)} items scored ({what}); mean {scores.mean():.3f}, max {scores.max():.3f}")
    if threshold is None:
        print("no threshold: this entry was trained before thresholds were calibrated; retrain it to flag items")
    else:
        quantile = f"{model.threshold_quantile:g}-quantile of held-out normal items"
        print(f"threshold {threshold:.3f} ({quantile}): {int(flags.sum())} flagged ({flags.mean():.1%})")
    if truth is not None:
        _print_detection(anomaly.detection_metrics(truth, scores, threshold), "items")
    if args.output:
        print(f"wrote {args.output}")
    return 0


def _print_detection(found, items):
    """AUROC, AUPRC and the confusion at the threshold, as `kerasae score --labels` prints them."""
    n = found.get("items", found.get("steps"))
    anomalies = found.get("anomalies", found.get("anomalous_steps"))
    if "auroc" in found:
        print(f"AUROC {found['auroc']:.4f}, AUPRC {found['auprc']:.4f} ({anomalies} anomalous of {n} {items})")
    else:
        print(f"--labels: all {n} {items} are of one kind; AUROC and AUPRC need both")
    if "precision" in found:
        print(
            f"at the threshold: precision {found['precision']:.4f}, recall {found['recall']:.4f}, "
            f"F1 {found['f1']:.4f}; true positives {found['true_positives']}, false positives "
            f"{found['false_positives']}, false negatives {found['false_negatives']}, "
            f"true negatives {found['true_negatives']}"
        )
    if "events_detected" in found:
        print(
            f"anomalies (runs of anomalous steps) with a flagged step: {found['events_detected']:.0%} "
            f"of {found['events']}"
        )


def _score_series(args, model, folder):
    """`kerasae score` of an entry trained on a series: one score per time step of --input."""
    from kerasae import data
    from kerasae.data import series, tables

    kept = series.load(folder)
    length, threshold = kept["window"]["length"], kept["threshold"]
    if not args.input.lower().endswith((".csv", ".parquet", ".pq")):
        raise KerasaeError(
            f"{args.input}: {os.path.basename(folder)} was trained on a series; give it as .csv or .parquet"
        )
    frame = tables.read(args.input)
    values = tables.load(folder).apply(frame, args.input)[:, 0, :, 0]
    series.require_length(len(values), length, args.input)
    truth = None
    if args.labels is not None and args.labels in frame.columns:
        truth = data.step_labels(frame, args.labels, args.input)
    elif args.labels is not None:
        truth = _read_truth(args.labels, len(values))
    scores = series.step_scores(model, values, length)
    flags = None if threshold is None else scores > threshold
    if args.output:
        _write_scores(args.output, scores, flags, truth)
    print(f"{args.entry}: {len(values)} time steps scored (reconstruction error, windows of {length} steps)")
    if threshold is not None:
        quantile = f"{kept['quantile']:g}-quantile of the validation steps"
        print(f"threshold {threshold:.4g} ({quantile}): {int(flags.sum())} steps flagged ({flags.mean():.1%})")
    if truth is not None:
        _print_detection(series.step_metrics(scores, threshold, truth), "steps")
    if args.output:
        print(f"wrote {args.output}")
    return 0


def _load_items(path, entry):
    """Images from .npy / .npz, or, for an entry trained on a table, rows through its stored transform."""
    from kerasae.data import tables

    transform = tables.load(entry)
    if transform is None:
        return _load_images(path)
    if not path.lower().endswith((".csv", ".parquet", ".pq")):
        raise KerasaeError(f"{path}: {os.path.basename(entry)} was trained on a table; give rows as .csv or .parquet")
    return transform.apply(tables.read(path), path)


def _read_truth(path, n):
    """Which items are anomalous, from a .npy / .npz (first array) or a one-column .csv of 0 and 1."""
    import numpy as np

    from kerasae.errors import DataError

    try:
        if path.lower().endswith((".csv", ".txt")):
            values = np.loadtxt(path, delimiter=",", ndmin=1, dtype=str, comments=None)
            if values.ndim > 1:
                raise DataError(f"{path}: {values.shape[1]} columns; the labels are one column of 1 and 0")
            header = len(values) > 0 and not values[0].strip().lstrip("-").isdigit()
            rows = [(line, v.strip()) for line, v in enumerate(values[header:], start=1 + header)]
            bad = [(i, v) for i, v in rows if v not in ("0", "1")]
            if bad:
                raise DataError(f"{path}: line {bad[0][0]} is '{bad[0][1]}'; labels are 1 (anomalous) or 0 (normal)")
            y = np.array([v == "1" for _, v in rows])
        else:
            loaded = np.load(path, allow_pickle=False)
            y = loaded[loaded.files[0]] if hasattr(loaded, "files") else loaded
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    y = np.asarray(y).reshape(-1) if np.ndim(y) == 2 and 1 in np.shape(y) else np.asarray(y)
    if y.shape != (n,):
        raise DataError(f"{path}: {y.shape[0] if y.ndim else 0} labels for {n} items of --input")
    if y.dtype != bool and not np.isin(y, (0, 1)).all():
        raise DataError(f"{path}: labels are 1 (anomalous) or 0 (normal), found {sorted(set(y.tolist()) - {0, 1})[0]}")
    return y.astype(bool)


def _write_scores(path, scores, flags, truth):
    """item, score, flagged[, label] per item, as CSV; written whole or not at all."""
    import csv
    import tempfile

    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise KerasaeError(f"--output: no folder {folder}")
    columns = ["item", "score"] + ([] if flags is None else ["flagged"]) + ([] if truth is None else ["label"])
    with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".csv.tmp", delete=False, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for i, value in enumerate(scores):
            row = [i, f"{value:.6g}"]
            row += [] if flags is None else [int(flags[i])]
            row += [] if truth is None else [int(truth[i])]
            writer.writerow(row)
    os.replace(f.name, path)


def _write_images(path, title, rows, arrays):
    """The images as a PNG grid, one labelled row per (label, images) pair; or, to a .npz path,
    the arrays themselves."""
    from kerasae.assess import figures

    if path.lower().endswith(".npz"):
        import numpy as np

        np.savez(path, **arrays)
    else:
        figures.image_rows(rows, path, title)
    print(f"wrote {path}")


def _sample(args):
    from kerasae.assess import samplers
    from kerasae.store import zoo

    entry = zoo.resolve(args.entry, args.zoo)
    model = zoo.load(entry)
    sampler = args.sampler or ("prior" if model.generative else "gmm")
    if sampler == "prior" and not model.generative:
        raise KerasaeError(
            f"--sampler prior: a {type(model).__name__} was not trained towards a prior; use --sampler gmm "
            "(a Gaussian mixture fitted to its training codes)"
        )
    if args.digits and not model.conditional:  # a flag for conditional entries only
        raise KerasaeError(f"--digits: {args.entry} is not label-conditioned; use an entry of a conditional family")
    digits = _digits(args.digits, model.num_classes) if args.digits else model.default_labels(args.n)
    n = len(digits) if digits else args.n
    params = samplers.for_entry(entry, model) if sampler == "gmm" else None
    images = model.decode(samplers.draw(model, sampler, n, args.seed, params), digits)
    per_row = 8
    rows = [("", images[i : i + per_row]) for i in range(0, len(images), per_row)]
    source = "the prior" if sampler == "prior" else "a Gaussian mixture fitted to its training codes"
    arrays = {"images": images} | ({"labels": digits} if digits else {})
    _write_images(args.output, f"{args.entry}: samples from {source}", rows, arrays)
    return 0


def _digits(text, num_classes):
    try:
        digits = [int(d) for d in text.split(",")]
    except ValueError:
        raise KerasaeError(f"--digits: expected comma-separated integers, got {text!r}") from None
    if min(digits) < 0 or max(digits) >= num_classes:
        raise KerasaeError(f"--digits: classes must be in 0..{num_classes - 1}, got {text!r}")
    return digits


def _interpolate(args):
    from kerasae import data
    from kerasae.spec import recipe
    from kerasae.store import zoo

    entry = zoo.resolve(args.entry, args.zoo)
    model = zoo.load(entry)
    r = recipe.load(os.path.join(entry, zoo.RECIPE_FILE))
    d = data.load(r.data, seed=r.train.seed)
    x, y = d.x_test, d.y_test
    rows, pairs = [], [(2 * i, 2 * i + 1) for i in range(min(args.pairs, len(x) // 2))]
    for a, b in pairs:
        labels = None if y is None else (y[a], y[b])
        rows.append((f"test {a} -> {b}", model.interpolate(x[a], x[b], args.steps, labels)))
    arrays = {"images": [images for _, images in rows], "pairs": pairs}
    _write_images(args.output, f"{args.entry}: latent interpolation", rows, arrays)
    return 0


def _export(args):
    import importlib.util

    from kerasae.store import export, zoo

    entry = zoo.resolve(args.entry, args.zoo)
    zoo.check_entry(entry)
    needed = {"tf_saved_model": ["tensorflow"], "onnx": ["tensorflow", "onnx", "tf2onnx"]}[args.format]
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise KerasaeError(f"--format {args.format} needs {', '.join(missing)}: pip install 'kerasae[onnx]'")
    default = zoo.SAVED_MODEL_DIR if args.format == "tf_saved_model" else zoo.ONNX_DIR
    out = os.path.abspath(args.output or os.path.join(entry, default))
    if os.path.exists(out) and not os.path.isdir(out):
        raise KerasaeError(f"--output: {out} exists and is not a folder")
    with zoo.replacing(out) as staged:  # a failed export leaves the old one whole
        export.export(args.format, os.path.join(entry, zoo.MODEL_FILE), staged)
    print(f"wrote {out}")
    return 0


def _serve(args):
    import importlib.util

    from kerasae.store import zoo

    missing = [m for m in ("starlette", "uvicorn", "jinja2", "markdown") if importlib.util.find_spec(m) is None]
    if missing:
        raise KerasaeError(f"kerasae serve needs {', '.join(missing)}: pip install 'kerasae[serve]'")
    folder = zoo.root(args.zoo)
    if not os.path.isdir(folder):
        raise KerasaeError(f"--zoo: no zoo folder at {folder}")
    if not 0 <= args.port <= 65535:
        raise KerasaeError(f"--port: {args.port} is not a port (0..65535)")
    from kerasae.serve import server

    try:
        sock = server.bind(args.host, args.port)
    except OSError as e:
        raise KerasaeError(f"--host {args.host} --port {args.port}: cannot listen there ({e.strerror})") from None
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    entries = len(zoo.entries(folder))
    print(f"serving {os.path.abspath(folder)} ({entries} entries) at http://{shown}:{port}/", flush=True)
    print("Ctrl-C stops it", flush=True)
    server.serve(server.create_app(folder), sock)
    return 0


COMMANDS = {
    "train": _train,
    "validate": _validate,
    "eval": _eval,
    "denoise": _denoise,
    "sample": _sample,
    "interpolate": _interpolate,
    "score": _score,
    "export": _export,
    "serve": _serve,
}


def main(argv=None):
    """The `kerasae` command: runs one subcommand; returns its exit code (2 for bad input)."""
    args = _parser().parse_args(argv)
    command = (
        {"list": _zoo_list, "show": _zoo_show}[args.zoo_command] if args.command == "zoo" else COMMANDS[args.command]
    )
    try:
        return command(args)
    except TrainingStopped as e:
        again = " ".join([getattr(args, "recipe", "RECIPE")] + [f"--set {o}" for o in getattr(args, "overrides", [])])
        print(f"stopped: {str(e).replace('<recipe>', again)}", file=sys.stderr)
        return e.exit_code
    except KerasaeError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `kerasae zoo list | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # noqa: BLE001 -- last resort: a short message, traceback with --debug
        if args.debug:
            raise
        print(f"internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""Model cards: each entry's README.md and the zoo's one-table README.md, from metrics.json."""

import os

from kerasae import data, families
from kerasae.assess import metric_table
from kerasae.store import zoo

FIGURE_CAPTIONS = {
    "reconstructions": "Test {subject}s (top row) and their reconstructions after the epochs shown "
    "(the seed's Fig. 2).",
    "denoising": "Input, input with the training corruption, and the model's output (the seed's Fig. 3).",
    "filters": "First-layer weights, grey = 0, each tile scaled by its 99th percentile of |w| (the seed's Fig. 4).",
    "samples": "Images decoded from codes drawn from {prior}.",
    "interpolation": "Decodes along the line between two test {subject}s' latent means, after the epochs shown "
    "(the seed's Fig. 7).",
    "manifold": "Decodes of a grid over the 2-D latent space, spaced by Gaussian quantiles.",
    "latent": "Test codes in 2-D (first two principal components when the code is wider), coloured by {label}.",
    "loss": "Training and validation loss terms per epoch.",
    "scores": "Anomaly scores of the normal and the anomalous test items (of the other classes; a series' windows "
    "holding a known anomalous step), with the threshold calibrated on held-out normal items; the ROC curve.",
    "series": "The test part of the series (standardized columns) and each step's anomaly score: its "
    "reconstruction error averaged over the windows that hold it, with the threshold calibrated on the validation "
    "steps; flagged steps in red, known anomalies shaded.",
    "traversals": "The first test {subject}'s code with one unit (a row; the most active units) moved by -3..3 "
    "standard deviations of that unit over the test codes.",
}


# Sample quality on MNIST as published: FID on the Inception network's features (Heusel et al. 2017),
# 10,000 samples; the scale differs from kerasae's (features of a small MNIST classifier). The values are
# pythae's reference values, which it took from the official RAE code, beside what pythae obtained
# (pythae's examples/scripts/reproducibility/README.md). Ghosh et al. (2020) report their own values in
# Table 1; those are not quoted here, as this team has not checked them at the source.
PUBLISHED_FID = (
    (
        "RAE-L2, GMM sampler (Ghosh et al. 2020)",
        9.9,
        "pythae's reference value, from the official RAE code; pythae obtained 9.1",
    ),
    (
        "RAE-GP, GMM sampler (Ghosh et al. 2020)",
        9.4,
        "pythae's reference value, from the official RAE code; pythae obtained 9.7",
    ),
)


# Published test NLL (nats per image) on binarized MNIST, as (model, setting, NLL, binarization). Burda,
# Grosse & Salakhutdinov (2016), "Importance Weighted Autoencoders", Table 1 (k = 5000 at test, 3,280
# passes over the data; trained on the first 59,600 training digits, the last 400 held out for
# validation: `binarized_mnist(n_validation=400)` in their code's datasets.py); Tomczak & Welling (2018),
# "VAE with a VampPrior" (as pythae's reproduction card quotes it, on "Binary MNIST": statically
# binarized, so not comparable with the entries' dynamic binarization); Sønderby et al. (2016), "Ladder
# Variational Autoencoders", Table 1.
DYNAMIC, STATIC = "by sampling", "fixed (static)"
PUBLISHED_NLL = (
    ("VAE (Burda et al. 2016)", "1 stochastic layer, 784-[200-200]-50, tanh, ELBO", 86.76, DYNAMIC),
    ("IWAE, k = 50 (Burda et al. 2016)", "1 stochastic layer, as above, k = 50 bound", 84.78, DYNAMIC),
    ("VAE (Burda et al. 2016)", "2 stochastic layers, 784-[200-200]-100-[100-100]-50, ELBO", 85.33, DYNAMIC),
    ("IWAE, k = 50 (Burda et al. 2016)", "2 stochastic layers, as above, k = 50 bound", 82.90, DYNAMIC),
    ("VAE + VampPrior (Tomczak & Welling 2018)", "1 stochastic layer, 500 pseudo-inputs, warm-up", 85.57, STATIC),
    (
        "Ladder VAE (Sønderby et al. 2016)",
        "5 stochastic layers, batch norm, warm-up, fine-tuned; trained with k = 10 importance samples",
        81.74,
        DYNAMIC,
    ),
)
COMPARABLE_NLL = tuple(row for row in PUBLISHED_NLL if row[-1] == DYNAMIC)


def comparable_to_published(metrics):
    """Whether the entry's NLL is the quantity the published table reports: p(x), not p(x | y),
    on MNIST binarized by sampling."""
    return (
        not _family(metrics).conditional
        and "nll" in metrics.get("evaluation", {})
        and metrics["data"]["name"] == "mnist"
        and metrics["data"]["binarize"] == "bernoulli"
    )


def _family(metrics):
    """The family table's entry of an entry's family."""
    return families.get(metrics["family"])


def fmt(value, digits=2):
    """A metric as the cards show it: yes/no for booleans, `digits` decimals for floats."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return " / ".join(fmt(item, digits) for item in value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def metric_rows(metrics):
    """(metric, value, unit) rows for the card's table: the metric table's (`kerasae.assess.metric_table`)."""
    return metric_table.rows(metrics)


def entry_card(path, recipe, metrics):
    """Writes `<entry>/README.md`: recipe summary, data, metrics table, figures inline."""
    m = recipe["model"]
    lines = [
        f"# {metrics['name']}",
        "",
        f"A `{m['family']}` model trained by kerasae {metrics['versions']['kerasae']} "
        f"(Keras {metrics['versions']['keras']}, {metrics['versions']['backend']} backend) "
        f"for {metrics['epochs']} epochs in {metrics['train_seconds']:.0f} s"
        f"{' on ' + metrics['versions']['hardware'] if 'hardware' in metrics['versions'] else ''}.",
        "",
        "```python",
        "import kerasae  # registers kerasae's classes with Keras",
        "import keras",
        "",
        f'model = keras.saving.load_model("zoo/{metrics["name"]}/{zoo.MODEL_FILE}")',
        f'model = kerasae.load("{metrics["name"]}")  # the same, found by name ($KERASAE_ZOO, ./zoo)',
        "```",
        "",
        "The file loads on TensorFlow, JAX and PyTorch, without optimizer state (compile it to fine-tune). "
        f"Serve it with `kerasae export {metrics['name']} --format tf_saved_model` ({_saved_model(path)}: "
        "signatures `serve`, `encode`, `decode`) or `--format onnx`. `check.npz` holds the first 32 test "
        "images with the codes and reconstructions this model gives them. "
        f"Generate with `kerasae sample {metrics['name']}`: "
        f"{'from ' + _family(metrics).prior + ', or with `--sampler gmm` ' if _family(metrics).generative else ''}"
        f"from a Gaussian mixture fitted to its training codes (`{zoo.SAMPLER_FILE}`).",
        "",
        *_recipe_and_data(m, recipe, metrics["data"]),
        "## Test metrics",
        "",
        "| metric | value | unit |",
        "| --- | ---: | --- |",
    ]
    lines += [f"| {name} | {fmt(value)} | {unit} |" for name, value, unit in metric_rows(metrics)]
    if comparable_to_published(metrics):
        ev = metrics["evaluation"]
        lines += [
            "",
            f"This entry's test NLL, {fmt(ev['nll'])} nats (k = {ev['nll_samples']}), is comparable with the "
            "published numbers on MNIST binarized by sampling: [the zoo's table](../README.md#against-the-published-"
            f"numbers) lists {len(COMPARABLE_NLL)} of them with their settings, from "
            f"{min(row[2] for row in COMPARABLE_NLL):.2f} to {max(row[2] for row in COMPARABLE_NLL):.2f} nats.",
        ]
    benchmark = os.path.join(path, zoo.BENCHMARK_FILE)
    if os.path.isfile(benchmark):
        with open(benchmark, encoding="utf-8") as f:
            lines += ["", "## Benchmark", "", f.read().strip()]
    lines += ["", "## Figures", ""]
    figure_dir = os.path.join(path, zoo.FIGURES_DIR)
    subject = data.subject(recipe["data"].get("dataset", "mnist"))
    label = "digit" if subject == "digit" else "label"  # a digit set's labels are its digits
    for figure, caption in FIGURE_CAPTIONS.items():
        if os.path.isfile(os.path.join(figure_dir, f"{figure}.png")):
            caption = caption.format(prior=_family(metrics).prior, subject=subject, label=label)
            lines += [f"![{figure}]({zoo.FIGURES_DIR}/{figure}.png)", "", caption, ""]
    zoo.write_text(os.path.join(path, zoo.CARD_FILE), "\n".join(lines) + "\n")


def _saved_model(path):
    """Whether the entry ships its SavedModel, in the card's words."""
    if os.path.isdir(os.path.join(path, zoo.SAVED_MODEL_DIR)):
        return f"shipped in `{zoo.SAVED_MODEL_DIR}/`"
    return f"not shipped: the command writes `{zoo.SAVED_MODEL_DIR}/`"


def _architecture_rows(m, code):
    """The recipe table's rows on the networks: encoder, code, decoder -- or the stochastic layers."""
    if m.get("stochastic_layers"):
        layers = " / ".join(
            f"{layer['hidden']} -> z{i + 1} ({layer['latent_dim']})" for i, layer in enumerate(m["stochastic_layers"])
        )
        return [
            f"| stochastic layers | {layers}, {m['activation']}; the decoders mirror them |",
            f"| inference, prior | {m['inference']}, {m['prior']}"
            f"{' (' + str(m['pseudo_inputs']) + ' pseudo-inputs)' if m['prior'] == 'vamp' else ''}, "
            f"{m['posterior_flow']} IAF steps a layer, output {m['output_activation']} |",
        ]
    return [
        f"| encoder | {m['encoder'] or 'none (the code is the hidden layer)'}, {m['activation']} |",
        f"| code | {m['latent_dim']} units{code} |",
        f"| decoder | {m['decoder'] if m['decoder'] is not None else 'mirrors the encoder'}, "
        f"output {m['output_activation']} |",
    ]


def _recipe_and_data(m, recipe, data):
    """The card's "Recipe" and "Data" sections."""
    code = "" if families.get(m["family"]).variational else f", {m['latent_activation']}"
    return [
        "## Recipe",
        "",
        "| key | value |",
        "| --- | --- |",
        *_architecture_rows(m, code),
        f"| loss | {', '.join(f'{k} {v}' for k, v in recipe['loss'].items())} |",
        f"| corruption | {_corruption(recipe['corruption'])} |",
        f"| training | {recipe['train']['optimizer']}, learning rate {_schedule(recipe['train'])}, "
        f"batch {recipe['train']['batch_size']}, seed {recipe['train']['seed']} |",
        "",
        "The full resolved recipe is `recipe.yaml`.",
        "",
        "## Data",
        "",
        _data_line(data),
        "",
    ]


def _data_line(data):
    """Where the data came from, its splits and checksums; a table's columns."""
    sizes = f"{data['sizes']['train']} train / {data['sizes']['validation']} validation / {data['sizes']['test']} test"
    if data["name"] == "table":
        return (
            f"Rows of the table `{data['source']}` (sha256 `{data['sha256']['file'][:16]}…`): {sizes}, "
            f"{len(data['columns'])} numbers per row after the stored transform (`transform.json`: numeric "
            "columns standardized with the training rows' mean and deviation, categories one-hot)."
        )
    if data["name"] == "sequence":
        steps, window = data["steps"], data["window"]
        return (
            f"Windows of the series `{data['source']}` (sha256 `{data['sha256']['file'][:16]}…`), columns "
            f"{', '.join(data['columns'])}, standardized with the training part's mean and deviation "
            f"(`transform.json`); split in time into {steps['training']} training, {steps['validation']} validation "
            f"and {steps['test']} test steps; windows of {window['length']} steps every {window['stride']}: {sizes}."
        )
    return (
        f"{data['name']} from `{data['source']}`, binarize: {data['binarize']}; {sizes} images of shape "
        f"{data['image_shape']}. sha256 of the stored arrays: x_train `{data['sha256']['x_train'][:16]}…`, "
        f"x_test `{data['sha256']['x_test'][:16]}…`."
    )


def _corruption(corruption):
    """'masking, p 0.2': the type, then its keys that are set."""
    keys = ", ".join(f"{k} {v}" for k, v in corruption.items() if k != "type" and v is not None)
    return f"{corruption['type']}, {keys}" if keys else corruption["type"]


def _fid_note(fid):
    """What the zoo table's FID columns are."""
    return [
        f"FID: {fid['samples']} samples (decoder means) against the 10,000 MNIST test digits, on the 128 "
        f"penultimate features of kerasae's MNIST classifier (`kerasae/assess/fid.py`, test accuracy "
        f"{fid['classifier_accuracy']:.4f}); lower is better. The floor, half the test digits against the other "
        f"half, is {fid['floor']:.2f}. `prior`: codes from the family's prior; `gmm`: from a 10-component Gaussian "
        "mixture fitted to 10,000 training codes (`sampler.npz`). Active units: code units whose mean over the "
        "test digits varies, Cov > 0.01 (Burda et al. 2016).",
    ]


def _published_fid():
    """The published MNIST FIDs the entries can be set beside (another feature space)."""
    lines = [
        "### Sample quality as published",
        "",
        "MNIST FID on the Inception network's features, 10,000 samples: the same measure in another feature "
        "space, so the scale is not kerasae's; the ordering of samplers and families is what compares.",
        "",
        "| model | FID (Inception) | note |",
        "| --- | --- | --- |",
    ]
    return lines + [f"| {name} | {value} | {note} |" for name, value, note in PUBLISHED_FID]


def _schedule(train):
    rate = train["learning_rate"]
    if train.get("learning_rate_schedule", "constant") == "cosine":
        return f"{rate} with cosine decay to {train['final_learning_rate']}"
    return str(rate)


ZOO_COLUMNS = (
    "entry",
    "family",
    "code",
    "data",
    "test BCE (nats)",
    "ELBO / NLL (nats)",
    "FID prior",
    "FID gmm",
    "probe acc.",
    "active units",
    "backend",
    "train s",
)


def _zoo_row(name, m):
    """One entry's row of the zoo table, in `ZOO_COLUMNS` order."""
    ev = m.get("evaluation", {})
    fid = ev.get("fid", {})
    bound = " / ".join(fmt(ev[k]) for k in ("elbo", "nll") if k in ev) or "–"
    bound += " (given the digit)" if _family(m).conditional and "nll" in ev else ""
    return (
        f"[{name}]({name}/{zoo.CARD_FILE})",
        m["family"],
        str(ev.get("code_units", m["latent_dim"])),
        m["data"]["name"],
        fmt(ev["reconstruction"]["bce"]) if "bce" in ev.get("reconstruction", {}) else "–",  # none outside [0, 1]
        bound,
        fmt(fid["prior"], 1) if "prior" in fid else "–",
        fmt(fid["gmm"], 1) if "gmm" in fid else "–",
        fmt(ev["probe_accuracy"], 3) if "probe_accuracy" in ev else "–",
        str(ev["active_units"]) if "active_units" in ev else "–",
        m["versions"]["backend"],
        f"{m['train_seconds']:.0f}",
    )


def _published_nll(nll):
    """The table of published test NLLs with the comparable entries', [(name, metrics)]."""
    lines = [
        "## Against the published numbers",
        "",
        "Test NLL, -log p(x) in nats per image, importance-sampled, on binarized MNIST (lower is better). The "
        "entries binarize by sampling, afresh each epoch; a row binarized once (fixed) is another data set and "
        "does not compare. Burda et al. train on 59,600 digits (400 held out for validation).",
        "",
        "| model | setting | binarization | test NLL (nats) | importance samples k |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {name} | {setting} | {binarized} | {value:.2f} | 5000 |"
        for name, setting, value, binarized in PUBLISHED_NLL
    ]
    return lines + [
        f"| [{name}]({name}/{zoo.CARD_FILE}) | this zoo: {m['family']}, {m['epochs']} epochs | {DYNAMIC} | "
        f"{fmt(m['evaluation']['nll'])} | {m['evaluation']['nll_samples']} |"
        for name, m in nll
    ]


def zoo_text(zoo_dir=None):
    """The zoo's card: one table of every entry, the published numbers beside them (markdown)."""
    entries = list(zoo.entries(zoo_dir))
    lines = [
        "# kerasae zoo",
        "",
        "Load any entry with `import kerasae, keras; keras.saving.load_model('zoo/<entry>/model.keras')`.",
        "Test-set numbers, per image; each entry's README has its figures and the full table. A conditional family's "
        "ELBO and NLL are of the image given its digit, -log p(x | y): not comparable with the others'. Probe acc.: "
        "a linear classifier of the digit from the code; a conditional family is given the digit, so its code is "
        "meant to leave it out and its probe is low by design.",
        "",
        "| " + " | ".join(ZOO_COLUMNS) + " |",
        "| " + " | ".join("---" for _ in ZOO_COLUMNS) + " |",
    ]
    lines += ["| " + " | ".join(_zoo_row(name, m)) + " |" for name, m in entries]
    fids = [m["evaluation"]["fid"] for _, m in entries if "fid" in m.get("evaluation", {})]
    if fids:
        lines += ["", *_fid_note(fids[0])]
    nll = [(name, m) for name, m in entries if comparable_to_published(m)]
    if nll:
        lines += ["", *_published_nll(nll)]
    if fids:
        lines += ["", *_published_fid()]
    return "\n".join(lines) + "\n"


def zoo_table(zoo_dir=None):
    """Writes `<zoo>/README.md`, the zoo's card (`zoo_text`)."""
    root = zoo.root(zoo_dir)
    os.makedirs(root, exist_ok=True)
    zoo.write_text(os.path.join(root, zoo.CARD_FILE), zoo_text(zoo_dir))

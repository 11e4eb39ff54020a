"""The metric table: every number an entry reports, once.

Each `Metric` is a key of metrics.json's "evaluation", the card's rows for it (label, value, unit),
which way is better, when it applies and how it is computed. `kerasae.assess.evaluate` computes, in the
table's order, what applies; the cards and `kerasae eval` show the rows in the same order. A new
metric is one entry here (and, when it needs a new computation, one property of
`kerasae.assess.evaluate.Evaluation`).

`applies` and `compute` take that `Evaluation`: the model, the data and what the metrics share
(codes, the PCA fit, the ELBO's terms), each computed once when first asked for. This module
imports neither Keras nor NumPy, so the cards render without a backend.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

from kerasae import families

SCORE_NAMES = {
    "reconstruction": "reconstruction loss",
    "elbo": "negative ELBO",
    "nll": "importance-sampled NLL",
}


def _always(evaluation):
    return True


def _no_rows(value, metrics):
    return []


@dataclasses.dataclass(frozen=True)
class Metric:
    """One entry of the table.

    Attributes:
        key: its key in metrics.json's "evaluation".
        compute: the `Evaluation` -> its value (a number, a list, or a dict of numbers).
        rows: (its value, the entry's metrics) -> the card's rows, (label, value, unit) each.
        better: "higher" or "lower", which way is better; "" for counts, settings and yes/no.
        applies: the `Evaluation` -> whether the model and data have it.
    """

    key: str
    compute: Callable[[Any], Any]
    rows: Callable[[Any, dict], list] = _no_rows
    better: str = ""
    applies: Callable[[Any], bool] = _always


def row(label, unit=""):
    """The rows of a metric shown as one: `label` and `unit` are text, or functions of the entry's
    metrics for a text that depends on them."""

    def rows(value, metrics):
        text = label(metrics) if callable(label) else label
        return [(text, value, unit(metrics) if callable(unit) else unit)]

    return rows


def _evaluation(metrics):
    return metrics.get("evaluation", {})


def _reconstruction_rows(value, metrics):
    rows = [
        ("reconstruction BCE", value.get("bce"), "nats / image"),
        ("reconstruction squared error", value["sse"], "sum over pixels / image"),
        ("PSNR", value.get("psnr_db"), "dB"),
    ]
    return [r for r in rows if r[1] is not None]  # no BCE or PSNR for images outside [0, 1]


def _pca_rows(value, metrics):
    rows = [
        (f"PCA baseline ({value['components']} components) BCE", value.get("bce"), "nats / image"),
        ("PCA baseline squared error", value["sse"], "sum over pixels / image"),
    ]
    return [r for r in rows if r[1] is not None]


def _nll_label(metrics):
    given = " of the image given its digit" if families.get(metrics["family"]).conditional else ""
    return f"NLL{given}, importance-sampled (k = {_evaluation(metrics).get('nll_samples')})"


def _of_code_units(metrics):
    return f"of {_evaluation(metrics).get('code_units', metrics.get('latent_dim'))}"


def _of_layer_units(metrics):
    return "of " + " / ".join(map(str, _evaluation(metrics).get("layer_units", [])))


def _fid_rows(fid, metrics):
    """One row per sampler, then the floor and what the features are."""
    rows = [
        (f"FID, {fid['samples']} samples from the {sampler} sampler", fid[sampler], "vs MNIST test digits")
        for sampler in ("prior", "gmm")
        if sampler in fid
    ]
    floor = "real-vs-real floor: half the test digits against the other half"
    accuracy = f"features of kerasae's MNIST classifier, test accuracy {fid['classifier_accuracy']:.4f}"
    return rows + [(f"FID {floor}", fid["floor"], accuracy)]


def _denoising_rows(value, metrics):
    return [
        ("noisy input squared error", value["noisy_input_sse"], "sum over pixels / image"),
        ("denoised output squared error", value["output_sse"], "sum over pixels / image"),
        ("denoising gain", value["gain_db"], "dB"),
    ]


def _filters_rows(value, metrics):
    return [("edge-like first-layer filters", value["edge_like"], f"of {value['filters']} ({value['measure']})")]


def _anomaly_rows(anomaly, metrics):
    """The threshold, the share of test items flagged and, with known anomalies, how well the
    scores find them; a series' rows per time step."""
    if anomaly.get("threshold") is None:
        return []
    score = SCORE_NAMES[anomaly["score"]] + (f" (k = {anomaly['samples']})" if "samples" in anomaly else "")
    quantile = f"{anomaly['threshold_quantile']:g}-quantile of held-out"
    rows = [
        (f"anomaly threshold: {score}", anomaly["threshold"], quantile),
        ("test items flagged (score above the threshold)", anomaly["flagged"], "fraction"),
    ]
    data = metrics.get("data", {})
    if "auroc" in anomaly and data["name"] == "sequence":
        rows += [("AUROC of windows (a window holding a known anomalous step as positive)", anomaly["auroc"], "")]
    elif "auroc" in anomaly:
        normal = ", ".join(map(str, data.get("classes", [])))
        base_rate = f"base rate {anomaly['anomalies'] / anomaly['items']:.3f}"
        rows += [
            (f"AUROC, classes {normal} against the others", anomaly["auroc"], ""),
            ("AUPRC (the others as positives)", anomaly["auprc"], base_rate),
            ("precision / recall of the flags", f"{anomaly['precision']:.3f} / {anomaly['recall']:.3f}", ""),
        ]
    return rows + _step_rows(anomaly.get("steps"))


def _step_rows(steps):
    """A series' rows: its scores per time step against their threshold and the known anomalies."""
    if not steps or steps.get("threshold") is None:
        return []
    rows = [
        ("step threshold", steps["threshold"], f"{steps['threshold_quantile']:g}-quantile of validation steps"),
        ("test steps flagged", steps["flagged"], "fraction"),
    ]
    if "auroc" in steps:
        f1 = f"{steps['precision']:.3f} / {steps['recall']:.3f} / {steps['f1']:.3f}"
        rows += [
            ("AUROC of steps", steps["auroc"], f"{steps['anomalous_steps']} of {steps['steps']} steps anomalous"),
            ("precision / recall / F1 of the flagged steps", f1, "per step"),
            (
                "known anomalies with a flagged step",
                steps["events_detected"],
                f"of {steps['events']} (runs of anomalous steps)",
            ),
        ]
    return rows


def _variational(e):
    return e.model.variational


def _with_nll(e):
    return e.model.variational and e.nll_samples > 0


def _of_the_model(key):
    """A metric of the model's own codes (`code_metrics`: a VQ-VAE's code use, an HVAE's layers)."""
    return lambda e: key in e.code_metrics


NLL = "nats / image"

# In the order the cards show them, which is the order they are computed in.
METRICS = (
    Metric("reconstruction", lambda e: e.reconstruction, _reconstruction_rows, "lower"),
    Metric("pca", lambda e: e.pca_metrics, _pca_rows, "lower"),
    Metric("beats_pca", lambda e: e.reconstruction["sse"] < e.pca_metrics["sse"], row("beats PCA (squared error)")),
    Metric(
        "probe_accuracy",
        lambda e: e.probes[0],
        row("linear probe accuracy on codes", "fraction of test digits"),
        "higher",
        lambda e: e.probes is not None,
    ),
    Metric(
        "pca_probe_accuracy",
        lambda e: e.probes[1],
        row("linear probe accuracy on PCA codes", "fraction of test digits"),
        "higher",
        lambda e: e.probes is not None,
    ),
    Metric("elbo", lambda e: e.elbo_terms["elbo"], row("test ELBO", NLL), "higher", _variational),
    Metric(
        "elbo_reconstruction",
        lambda e: e.elbo_terms["reconstruction_loss"],
        row("ELBO reconstruction term", NLL),
        "lower",
        _variational,
    ),
    Metric("elbo_kl", lambda e: e.elbo_terms["kl_loss"], row("ELBO KL term", NLL), "", _variational),
    Metric("nll", lambda e: e.nll, row(_nll_label, NLL), "lower", _with_nll),
    Metric("nll_samples", lambda e: e.nll_samples, applies=_with_nll),
    Metric(
        "nll_bits_per_dim",
        lambda e: e.bits_per_dim,
        row("NLL in bits per dimension (8-bit values)", "bits / dimension"),
        "lower",
        lambda e: _with_nll(e) and e.model.image_shape[-1] == 3,  # colour images: the literature's unit
    ),
    Metric("active_units", lambda e: e.active_units, row("active code units (Cov > 0.01)", _of_code_units)),
    Metric("code_units", lambda e: e.code_units),
    Metric(
        "active_units_per_layer",
        lambda e: e.code_metrics["active_units_per_layer"],
        row("active units per stochastic layer, z_1 first", _of_layer_units),
        applies=_of_the_model("active_units_per_layer"),
    ),
    Metric("layer_units", lambda e: e.code_metrics["layer_units"], applies=_of_the_model("layer_units")),
    Metric(
        "perplexity",
        lambda e: e.code_metrics["perplexity"],
        row("codebook perplexity (exp entropy of code use)", "codes"),
        "higher",
        _of_the_model("perplexity"),
    ),
    Metric(
        "codes_in_use",
        lambda e: e.code_metrics["codes_in_use"],
        row("codebook share in use", "fraction of codes"),
        "higher",
        _of_the_model("codes_in_use"),
    ),
    Metric("fid", lambda e: e.fid, _fid_rows, "lower", lambda e: e.fid_applies),
    Metric(
        "principal_angles_deg",
        lambda e: e.principal_angles,
        lambda angles, metrics: [("largest principal angle to PCA subspace", max(angles), "degrees")],
        "lower",
        lambda e: e.is_linear_autoencoder,
    ),
    Metric("denoising", lambda e: e.denoising, _denoising_rows, "higher", lambda e: e.model.corruption is not None),
    Metric(
        "filters",
        lambda e: e.filters,
        _filters_rows,
        "higher",
        lambda e: e.dataset.record["name"] == "patches",
    ),
    # Entries from before thresholds have none.
    Metric(
        "anomaly",
        lambda e: e.anomaly,
        _anomaly_rows,
        "higher",
        lambda e: e.model.threshold is not None or e.dataset.anomalous is not None or e.dataset.series is not None,
    ),
)
KEYS = tuple(metric.key for metric in METRICS)


def rows(metrics):
    """The card's (label, value, unit) rows of an entry's metrics: the test loss, then the table's."""
    evaluation = _evaluation(metrics)
    found = [("test loss (training objective)", metrics["test"].get("loss"), metrics.get("units", ""))]
    for metric in METRICS:
        if metric.key in evaluation:
            found += metric.rows(evaluation[metric.key], metrics)
    return found

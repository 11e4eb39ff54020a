"""How well anomaly scores find known anomalies: AUROC, AUPRC and the confusion at a threshold.

Scores come from `Autoencoder.score` (higher: more unusual); `is_anomaly` marks the items known
to be anomalous (the other classes of a one-class data set, labels given to `kerasae score`).
scikit-learn computes the curves.
"""

import numpy as np


def detection_metrics(is_anomaly, scores, threshold=None):
    """{auroc, auprc, anomalies, items} and, given a threshold, the confusion of flags (score >
    threshold) against the truth with precision, recall and F1. AUROC and AUPRC need both kinds of
    item; with one kind only the counts (and the confusion) are given."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    truth = np.asarray(is_anomaly, dtype=bool)
    out = {"items": int(len(truth)), "anomalies": int(truth.sum())}
    if 0 < truth.sum() < len(truth):
        out["auroc"] = float(roc_auc_score(truth, scores))
        out["auprc"] = float(average_precision_score(truth, scores))
    if threshold is not None:
        out.update(confusion(truth, np.asarray(scores) > threshold))
    return out


def confusion(truth, flags):
    """Counts of flags against the truth, and the precision, recall and F1 of the flags."""
    tp, fp = int((flags & truth).sum()), int((flags & ~truth).sum())
    fn, tn = int((~flags & truth).sum()), int((~flags & ~truth).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": fn,
        "true_negatives": tn,
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def summary(model, scores, is_anomaly=None):
    """What an entry's metrics say of its scores on test items: the score, its threshold, the
    share flagged and, where the anomalies are known, `detection_metrics`."""
    out = {"score": model.score_kind, "threshold": model.threshold, "threshold_quantile": model.threshold_quantile}
    if model.score_kind != "reconstruction":
        out["samples"] = model.score_samples
    if model.threshold is not None:
        out["flagged"] = float((scores > model.threshold).mean())
    if is_anomaly is not None:
        out.update(detection_metrics(is_anomaly, scores, model.threshold))
    return out

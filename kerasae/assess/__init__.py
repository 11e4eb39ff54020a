"""What a trained model is worth: the metric table and its metrics, samplers, figures and cards."""

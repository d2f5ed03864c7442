"""Metric trackers: JSON lines, TensorBoard, Weights & Biases, MLflow."""

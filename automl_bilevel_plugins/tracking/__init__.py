"""Run listeners: MLflow tracking and progress display."""

"""Models: the family registry, the families, walk-forward evaluation and MLflow tracking."""

"""Labels, walk-forward folds, training sets and meta-learning tasks."""

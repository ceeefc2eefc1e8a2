"""Explanations: SHAP values of each forecast, its top drivers, and how importance moves between trainings."""

"""Monitoring: realized outcomes of published forecasts, their validation, and the post-move audit."""

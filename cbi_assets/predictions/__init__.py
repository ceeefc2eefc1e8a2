"""Forecasts of the newest origin, their upload to the warehouse history, and shadow models."""

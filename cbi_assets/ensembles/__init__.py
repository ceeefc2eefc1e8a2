"""Ensembles of the model families: stacked and regime-aware blends of their out-of-fold forecasts,
conformal intervals around the blend, and each forecast's conviction and confidence."""

"""Meta-learning across regimes (Reptile) and cross-asset transfer between ZL and MES."""

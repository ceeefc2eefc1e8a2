"""Named regimes and the data-driven regime state."""

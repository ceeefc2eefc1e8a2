"""Regime specialists: a model per named or detected regime, used while its regime is current if it beat the generalist."""

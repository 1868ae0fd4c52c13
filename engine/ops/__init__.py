"""Numerical building blocks shared by the models (attention backends, RoPE)."""

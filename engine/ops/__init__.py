"""Numerical building blocks shared by the models: attention backends, RoPE, FP8 GEMMs, compiled blocks.

Imports: only ``engine``, the standard library and third-party packages; never ``soulx_live`` or ``plugins``.
"""

"""Loading released checkpoint files into modules built on the meta device, and the released folder layout
(:mod:`engine.loading.layout`: file names, the completeness check; torch-free, so the daemon can use it).

Imports: only ``engine``, the standard library and third-party packages; never ``soulx_live`` or ``plugins``.
"""

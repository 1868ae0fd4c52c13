"""Multi-GPU at the models' seams: Ulysses × Ring sequence parallelism for the DiT (:mod:`engine.parallel.usp`),
the parallel VAE (:mod:`engine.parallel.vae`), joining the torchrun group (:mod:`engine.parallel.launch`), this
process's rank (:mod:`engine.parallel.ranks`) and rank 0's choices broadcast to the group (:mod:`engine.parallel.decide`).

Import the submodules directly: this package itself imports nothing, so the torch-free
:mod:`engine.parallel.ranks` can be imported by the daemon without pulling torch in. Modules here import only
``engine``, the standard library and third-party packages (never ``soulx_live`` or ``plugins``).
"""

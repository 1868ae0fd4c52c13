"""Multi-GPU at the models' seams: Ulysses × Ring sequence parallelism for the DiT (:mod:`engine.parallel.usp`),
the parallel VAE (:mod:`engine.parallel.vae`) and joining the torchrun group (:mod:`engine.parallel.launch`)."""
from engine.parallel.mesh import (
    ParallelContext,
    destroy_parallel,
    init_parallel,
    resolve_degrees,
    ulysses_degree_for,
)
from engine.parallel.usp import (
    SequenceParallel,
    apply_sequence_parallel,
    remove_sequence_parallel,
)

__all__ = [
    "ParallelContext",
    "SequenceParallel",
    "apply_sequence_parallel",
    "destroy_parallel",
    "init_parallel",
    "remove_sequence_parallel",
    "resolve_degrees",
    "ulysses_degree_for",
]

"""Sequence parallelism (Ulysses) for the DiT, layered on at the model's seams; see :mod:`engine.parallel.usp`."""
from engine.parallel.mesh import (
    ParallelContext,
    destroy_parallel,
    init_parallel,
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
    "ulysses_degree_for",
]

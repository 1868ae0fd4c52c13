"""Reference-check runner: the project's own tool to prove numerical fidelity.

``python -m engine.refcheck TASK --inputs IN --outputs OUT --request REQUEST.json`` implements the
protocol of the golden bundle (shared/golden/README.md section 5). Each task handler lives in a
``tasks_*.py`` module beside this one and maps input tensors to output tensors.

Imports: only ``engine``, the standard library and third-party packages; never ``soulx_live`` or ``plugins``.
"""

"""The parsed request of one reference check."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RefRequest:
    """What a reference bundle asks one task to compute.

    ``models`` maps a role (``dit``, ``vae``, ``wav2vec2``) to an absolute path; ``outputs`` and
    ``optional_outputs`` map names to ``{"shape": [...], "dtype": str}``.
    """

    task: str
    params: dict[str, Any]
    models: dict[str, Path]
    outputs: dict[str, dict[str, Any]]
    optional_outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    case: str = ""

    @classmethod
    def from_file(cls, path: Path) -> "RefRequest":
        raw = json.loads(Path(path).read_text())
        return cls(
            task=raw["task"],
            params=dict(raw.get("params", {})),
            models={k: Path(v) for k, v in raw.get("models", {}).items()},
            outputs=dict(raw.get("outputs", {})),
            optional_outputs=dict(raw.get("optional_outputs", {})),
            case=raw.get("case", ""),
        )

    def model(self, role: str) -> Path:
        """The path given for ``role``; a clear error when the request lacks it."""
        if role not in self.models:
            raise KeyError(f"request for task {self.task!r} names no {role!r} model (has {sorted(self.models)})")
        return self.models[role]

    def wants(self, name: str) -> bool:
        """Whether ``name`` is a required or optional output (handlers skip unrequested debug work)."""
        return name in self.outputs or name in self.optional_outputs

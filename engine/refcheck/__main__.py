"""CLI entry of the reference-check runner (see engine/refcheck/__init__.py)."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from engine.refcheck.request import RefRequest

log = logging.getLogger("engine.refcheck")

Handler = Callable[[dict[str, torch.Tensor], RefRequest], dict[str, torch.Tensor]]

# task -> "module:function"; imported lazily so one task never pays for another's imports.
TASKS: dict[str, str] = {
    "dit_forward": "engine.refcheck.tasks_dit:dit_forward",
    "vae_encode": "engine.refcheck.tasks_vae:vae_encode",
    "vae_decode": "engine.refcheck.tasks_vae:vae_decode",
    "audio_embed": "engine.refcheck.tasks_audio:audio_embed",
    "wav2vec2_forward": "engine.refcheck.tasks_audio:wav2vec2_forward",
    "prepare": "engine.refcheck.tasks_stream:prepare",
    "sampler": "engine.refcheck.tasks_stream:sampler",
    "stream_chunk": "engine.refcheck.tasks_stream:stream_chunk",
    # SoulX-FlashHead Pro (the golden-flashhead bundle)
    "fh_dit_forward": "engine.refcheck.tasks_flashhead:fh_dit_forward",
    "fh_audio_embed": "engine.refcheck.tasks_flashhead:fh_audio_embed",
    "fh_prepare": "engine.refcheck.tasks_flashhead:fh_prepare",
    "fh_sampler": "engine.refcheck.tasks_flashhead:fh_sampler",
    "fh_stream_chunk": "engine.refcheck.tasks_flashhead:fh_stream_chunk",
}


def resolve_handler(task: str) -> Handler:
    if task not in TASKS:
        raise SystemExit(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    module_name, func_name = TASKS[task].split(":")
    return getattr(importlib.import_module(module_name), func_name)


def select_outputs(produced: dict[str, torch.Tensor], request: RefRequest) -> dict[str, torch.Tensor]:
    """Keep requested names only, check required shapes, and make tensors contiguous on CPU."""
    selected: dict[str, torch.Tensor] = {}
    for name, spec in request.outputs.items():
        if name not in produced:
            raise RuntimeError(f"task {request.task} produced no required output {name!r}")
        tensor = produced[name].detach().cpu()
        if list(tensor.shape) != list(spec["shape"]):
            raise RuntimeError(f"output {name!r} has shape {list(tensor.shape)}, expected {spec['shape']}")
        selected[name] = tensor.contiguous()
    for name in request.optional_outputs:
        if name in produced:
            selected[name] = produced[name].detach().cpu().contiguous()
    return selected


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.refcheck", description=__doc__)
    parser.add_argument("task", choices=sorted(TASKS))
    parser.add_argument("--inputs", type=Path, required=True, help="inputs .safetensors")
    parser.add_argument("--outputs", type=Path, required=True, help="where to write outputs .safetensors")
    parser.add_argument("--request", type=Path, required=True, help="request .json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from safetensors.torch import load_file, save_file

    request = RefRequest.from_file(args.request)
    if request.task != args.task:
        raise SystemExit(f"request is for task {request.task!r}, command line says {args.task!r}")
    inputs = load_file(str(args.inputs))
    torch.set_grad_enabled(False)
    produced = resolve_handler(args.task)(inputs, request)
    save_file(select_outputs(produced, request), str(args.outputs))
    return 0


if __name__ == "__main__":
    sys.exit(main())

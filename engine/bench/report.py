"""Turn a measured run into the benchmark report: summary figures, DiT FLOP utilisation, a table, JSON."""
from __future__ import annotations

import dataclasses
import datetime
import json
import platform
import statistics
import subprocess
from pathlib import Path
from typing import Any

import torch

from engine.bench.config import MOTION_FRAMES, BenchConfig
from engine.bench.device_peaks import peak_flops
from engine.bench.flops import dit_flops, latent_grid
from engine.bench.runner import SHIFT, TEXT_TOKENS, RawRun, dit_config_for

__all__ = ["build_report", "environment", "format_table", "git_commit", "summarize", "write_json"]

ROOT = Path(__file__).resolve().parents[2]
FPS = 25.0


def git_commit(root: Path = ROOT) -> dict[str, Any]:
    """The checkout's commit and whether it has uncommitted changes (``None`` outside a git checkout)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10,
                              check=False)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}
    if head.returncode:
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": head.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
        "device_name": platform.processor() or platform.machine(),
        **git_commit(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env |= {"device_name": props.name, "device_memory_gib": round(props.total_memory / 2**30, 1),
                "cudnn": torch.backends.cudnn.version()}
    return env


def attention_backend(cfg: BenchConfig, device: torch.device) -> str:
    """Which kernel ``engine.ops.attention`` picks for the DiT's q/k/v on this device and dtype."""
    from engine.bench.config import torch_dtype
    from engine.ops.attention import resolve_backend

    forced = None if cfg.attention_backend == "auto" else cfg.attention_backend
    return resolve_backend(torch.empty(1, 1, 1, 8, device=device, dtype=torch_dtype(cfg)), forced)


def summarize(per_chunk: list[dict[str, float]], wall_ms: list[float], frames_out: int) -> dict[str, Any]:
    """First chunk alone (warm-up); mean and min of the steady chunks (all chunks when only one).

    ``chunk_ms`` is wall time from the start of a chunk to its frames on the host, so it includes the untimed
    gaps (the sampler's update between DiT steps); ``stages_sum_ms`` does not.
    """
    steady, steady_wall = (per_chunk[1:], wall_ms[1:]) if len(per_chunk) > 1 else (per_chunk, wall_ms)
    stages = {k: round(statistics.fmean(c[k] for c in steady), 3) for k in steady[0]}
    mean_ms = statistics.fmean(steady_wall)
    return {
        "stages_ms": stages,
        "stages_sum_ms": round(sum(stages.values()), 3),
        "dit_ms": round(sum(v for k, v in stages.items() if k.startswith("dit_step_")), 3),
        "chunk_ms": round(mean_ms, 3),
        "chunk_ms_min": round(min(steady_wall), 3),
        "first_chunk_ms": round(wall_ms[0], 3),
        "frames_per_chunk": frames_out,
        "fps": round(frames_out / (mean_ms / 1e3), 3),
        "real_time_factor": round((frames_out / FPS) / (mean_ms / 1e3), 3),
    }


def _sig(value: float, digits: int = 6) -> float:
    """``value`` to ``digits`` significant digits (tiny configurations have tiny TFLOP figures)."""
    return float(f"{value:.{digits}g}")


def utilisation(cfg: BenchConfig, dit_ms: float, device: torch.device, device_name: str,
                ceiling: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """DiT FLOP per chunk (analytic, ``engine.bench.flops``), achieved FLOP/s and model FLOP utilisation.

    The FLOP count is what runs: with the cross K/V cache (the default) the text/CLIP embeddings and K/V are
    computed once per session, so they are left out of the per-chunk figure and given apart. The peak is that of
    the precision the DiT's big GEMMs run in: FP8 with ``--fp8`` (the bf16 figure beside it, and a mixed one that
    holds each part to its own peak), else the compute dtype. ``ceiling`` (:func:`engine.bench.ceiling.
    device_ceilings`) adds the utilisation of the measured matmul ceiling of the same precision.
    """
    per_step = dit_flops(dit_config_for(cfg), latent_grid(cfg.frames, cfg.height, cfg.width))
    per_forward = per_step.running(cfg.cross_kv_cache)
    per_chunk = per_forward * cfg.steps
    seconds = dit_ms / 1e3
    achieved = per_chunk / seconds if dit_ms > 0 else 0.0
    gpus = cfg.world_size
    peak_dtype = "fp8" if cfg.fp8 else cfg.dtype
    peak = peak_flops(device_name, peak_dtype, device.type)

    def share(tflops: float | None) -> float | None:
        return round(achieved / (tflops * 1e12 * gpus), 4) if tflops and achieved > 0 else None

    out: dict[str, Any] = {
        "dit_flops_per_step": per_step.as_dict(),
        "dit_flop_per_chunk": per_chunk,  # what ran: cached context K/V excluded when the cache is on
        "dit_tflop_per_chunk": _sig(per_chunk / 1e12),
        "dit_tflop_per_chunk_with_context_kv": _sig(per_step.total * cfg.steps / 1e12),  # SPEC §10's count
        "dit_tflop_context_kv": _sig(per_step.context_kv / 1e12),
        "dit_context_kv_cached": cfg.cross_kv_cache,  # True: the line above ran once per session, not per forward
        "dit_tflops_per_s": _sig(achieved / 1e12),  # all ranks together
        "peak_dtype": peak_dtype,
        "peak_tflops_per_gpu": peak.tflops,
        "peak_label": peak.label,
        "dit_flop_utilisation": share(peak.tflops),
        "dit_flop_utilisation_reason": peak.reason,
        # --fp8 only: the same achieved FLOP/s over the bf16 peak, and over the time each part would take at its
        # own peak (the FP8 block GEMMs at the FP8 peak, attention and the other linears at the bf16 peak).
        "peak_tflops_per_gpu_bf16": None,
        "dit_flop_utilisation_bf16": None,
        "dit_fp8_gemm_share": round(per_step.fp8_gemms / per_forward, 4) if cfg.fp8 else None,
        "dit_flop_utilisation_fp8_mixed": None,
    }
    if cfg.fp8:
        bf16 = peak_flops(device_name, "bf16", device.type).tflops
        out["peak_tflops_per_gpu_bf16"] = bf16
        out["dit_flop_utilisation_bf16"] = share(bf16)
        if bf16 and peak.tflops and achieved > 0:
            ideal_s = (per_step.fp8_gemms / (peak.tflops * 1e12)
                       + (per_forward - per_step.fp8_gemms) / (bf16 * 1e12)) * cfg.steps / gpus
            out["dit_flop_utilisation_fp8_mixed"] = round(ideal_s / seconds, 4)
    measured = (ceiling or {}).get(peak_dtype if peak_dtype != "fp16" else "bf16", {})
    out["matmul_ceiling"] = ceiling
    out["dit_flop_utilisation_of_measured_ceiling"] = share(measured.get("tflops"))
    return out


def build_report(cfg: BenchConfig, run: RawRun, *, benchmark: str | None = None) -> dict[str, Any]:
    """The full JSON report of one run (keys documented in ``engine.bench``)."""
    benchmark = benchmark or ("engine_flashhead" if cfg.model == "flashhead" else "engine_14b")
    device = torch.device(cfg.device)
    env = environment(device)
    summary = summarize(run.per_chunk, run.wall_ms, run.frame_shape[0])
    report: dict[str, Any] = {
        "benchmark": benchmark,
        **env,
        "config": dataclasses.asdict(cfg) | {"motion_frames": MOTION_FRAMES, "shift": SHIFT, "text_tokens": TEXT_TOKENS},
        "world_size": run.world_size,
        "dit_params": run.dit_params,
        "attention_backend": attention_backend(cfg, device),
        "build_s": round(run.build_s, 2),
        "prepare_ms": round(run.prepare_ms, 3),
        "per_chunk_ms": [{k: round(v, 3) for k, v in c.items()} for c in run.per_chunk],
        "wall_ms": [round(v, 3) for v in run.wall_ms],
        **summary,
        # Session preparation (reference encode) + the first chunk, to its frames on the host.
        "time_to_first_frame_ms": round(run.prepare_ms + run.wall_ms[0], 3),
        "output_frame_shape": list(run.frame_shape[1:]),
        "peak_memory_gib": run.peak_memory_gib,
        "peak_reserved_gib": run.peak_reserved_gib,
        **memory_figures(cfg),
    }
    report |= utilisation(cfg, summary["dit_ms"], device, str(env["device_name"]), run.matmul_ceiling)
    return report


def memory_figures(cfg: BenchConfig) -> dict[str, Any]:
    """The memory mode and its derived DiT weights on the GPU (:mod:`engine.memory`), next to the measured peak."""
    from engine.bench.config import torch_dtype
    from engine.memory import GIB, MemoryMode, dit_host_bytes, dit_weight_bytes

    mode = MemoryMode(offload=cfg.offload, fp8_weights=cfg.fp8_weights)
    dtype_bytes = torch_dtype(cfg).itemsize
    dit = dit_config_for(cfg)
    return {"memory_mode": mode.label,
            "dit_weights_on_gpu_gib_derived": round(dit_weight_bytes(dit, mode, dtype_bytes) / GIB, 3),
            "dit_pinned_host_gib_derived": round(dit_host_bytes(dit, mode, dtype_bytes) / GIB, 3)}


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}{unit}" if abs(value) >= 10 else f"{value:.3g}{unit}"
    return f"{value}{unit}"


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table of the report's figures (per stage, then totals)."""
    cfg = report["config"]
    commit = str(report.get("git_commit") or "?")[:12] + ("+dirty" if report.get("git_dirty") else "")
    tiny = ", TINY widths (checks the code, not the speed)" if cfg["tiny"] else ""
    lines = [
        (f"soulx-live bench  {report['device_name']} ({report['device']}) x{report['world_size']}  "
         f"{report['date']}  commit {commit}"),
        (f"config: {cfg.get('model', 'flashtalk')}, {cfg['frames']} frames {cfg['height']}x{cfg['width']}, {cfg['steps']} steps, {cfg['dtype']}, "
         f"{cfg['chunks']} chunks, attention {report['attention_backend']}, compile {cfg['compile']}{tiny}"),
        (f"levers: cross K/V cache {cfg.get('cross_kv_cache')}, fp8 {cfg.get('fp8')}, memory "
         f"{report.get('memory_mode', '-')}, compile mode "
         f"{cfg.get('compile_mode')}; parallel: ulysses {cfg.get('ulysses_degree') or 'auto'} x ring "
         f"{cfg.get('ring_degree') or 'auto'}, parallel VAE {cfg.get('parallel_vae')}"),
        "",
        f"{'stage':<22}{'first chunk ms':>16}{'steady ms':>12}",
    ]
    first = report["per_chunk_ms"][0]
    for name, ms in report["stages_ms"].items():
        lines.append(f"{name:<22}{_fmt(first.get(name)):>16}{_fmt(ms):>12}")
    lines.append(f"{'(sum of stages)':<22}{_fmt(sum(first.values())):>16}{_fmt(report['stages_sum_ms']):>12}")
    lines.append(f"{'chunk (wall)':<22}{_fmt(report['first_chunk_ms']):>16}{_fmt(report['chunk_ms']):>12}")
    peak = report["peak_memory_gib"]
    lines += [
        "",
        f"{'frames per chunk':<26}{report['frames_per_chunk']}",
        f"{'fps':<26}{_fmt(report['fps'])}  (real-time factor {_fmt(report['real_time_factor'])})",
        f"{'time to first frame':<26}{_fmt(report['time_to_first_frame_ms'], ' ms')}",
        f"{'peak GPU memory':<26}{_fmt(peak, ' GiB') if peak is not None else '- (not a CUDA device)'}",
        f"{'DiT weights on GPU':<26}{_fmt(report.get('dit_weights_on_gpu_gib_derived'), ' GiB')} (derived)",
        *_flop_lines(report),
    ]
    return "\n".join(lines)


def _flop_lines(report: dict[str, Any]) -> list[str]:
    """The DiT FLOP count, achieved rate, utilisation(s) and the device's peaks beside its measured ceilings."""
    with_kv, kv = report.get("dit_tflop_per_chunk_with_context_kv"), report.get("dit_tflop_context_kv")
    if report.get("dit_context_kv_cached"):
        count_note = f"  (what runs; {_fmt(with_kv)} with the text/CLIP K/V, run once per session: {_fmt(kv)} TFLOP)"
    else:
        count_note = f"  (text/CLIP K/V recomputed every step: {_fmt(kv)} TFLOP of it)"
    util = report["dit_flop_utilisation"]
    util_text = f"- ({report['dit_flop_utilisation_reason']})" if util is None else \
        f"{util * 100:.1f} % of {report['peak_label']} {report.get('peak_dtype', '')} {report['peak_tflops_per_gpu']} TF/s"
    lines = [
        f"{'DiT TFLOP per chunk':<26}{_fmt(report['dit_tflop_per_chunk'])}{count_note if with_kv else ''}",
        f"{'DiT achieved TFLOP/s':<26}{_fmt(report['dit_tflops_per_s'])}",
        f"{'DiT FLOP utilisation':<26}{util_text}",
    ]
    bf16, mixed = report.get("dit_flop_utilisation_bf16"), report.get("dit_flop_utilisation_fp8_mixed")
    if bf16 is not None:
        lines.append(f"{'  of the bf16 peak':<26}{bf16 * 100:.1f} % of {report['peak_tflops_per_gpu_bf16']} TF/s")
    if mixed is not None:
        lines.append(f"{'  of the fp8/bf16 mix':<26}{mixed * 100:.1f} % (the {report['dit_fp8_gemm_share'] * 100:.0f} % "
                     f"of FLOPs in FP8 GEMMs at the fp8 peak, the rest at the bf16 peak)")
    measured = report.get("dit_flop_utilisation_of_measured_ceiling")
    if measured is not None:
        lines.append(f"{'  of measured ceiling':<26}{measured * 100:.1f} %")
    for dtype, c in (report.get("matmul_ceiling") or {}).items():
        name = f"{dtype} peak / measured"
        peak_text = f"{c['peak_tflops']} TF/s" if c.get("peak_tflops") else "-"
        if c.get("tflops") is None:
            lines.append(f"{name:<26}{peak_text} / - ({c.get('reason')})")
        else:
            of_peak = f" ({c['share_of_peak'] * 100:.1f} % of peak)" if c.get("share_of_peak") else ""
            lines.append(f"{name:<26}{peak_text} / {c['tflops']} TF/s{of_peak}, {c['size']}³ matmul")
    return lines


def write_json(report: dict[str, Any], path: Path) -> str:
    """Write ``report`` as indented JSON to ``path`` (folders created); returns the text."""
    text = json.dumps(report, indent=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    return text

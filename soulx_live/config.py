"""Typed daemon configuration and the one function that assembles it.

Precedence, lowest to highest (each layer only overrides the keys it names):

1. packaged defaults (``soulx_live/configs/default.yaml``, identical to the model defaults below);
2. the YAML file passed as ``path`` (``--config FILE``);
3. environment variables ``SOULX_SECTION__KEY=value`` (double underscore nests, e.g.
   ``SOULX_ENGINE__LITE__FPS=30``; values are parsed as YAML scalars, except for text and path keys
   which are taken verbatim); ``SOULX_CONFIG`` is reserved for the CLI (path of the config file);
4. ``overrides``, the command-line flags, as dotted keys (``{"engine.kind": "lite"}``).

Unknown keys are rejected with :class:`ConfigError` naming the full dotted key, the closest valid key and
where the key came from. Relative paths in a YAML file are resolved against that file's folder; relative
paths from the environment or flags against the working directory at load time. Nothing is read at
import: :func:`load_config` reads the defaults, the file and the environment when it is called.
Secrets are :class:`pydantic.SecretStr`, so they never appear in ``repr``, logs or :meth:`SoulxConfig.to_yaml`.
"""
from __future__ import annotations

import difflib
import os
import types
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

# The sink sections belong to the sinks (plugins may not import this package); composed below, re-exported.
from plugins.settings import ObsConfig, RecorderConfig, VirtualCamConfig, VirtualMicConfig

__all__ = [
    "AudioConfig",
    "BusConfig",
    "ConfigError",
    "DriftConfig",
    "EngineConfig",
    "FlashTalkConfig",
    "LiteConfig",
    "LoggingConfig",
    "RemoteConfig",
    "MetricsConfig",
    "ObsConfig",
    "PushConfig",
    "RecorderConfig",
    "SinksConfig",
    "SoulxConfig",
    "StudioConfig",
    "SupervisorConfig",
    "TtsConfig",
    "VirtualCamConfig",
    "VirtualMicConfig",
    "load_config",
]

ENV_PREFIX = "SOULX_"
ENV_NESTING = "__"
# Not config keys: read by the CLI itself, the espeak-ng and matte model lookups, the worker and bench processes,
# or the test suite. tests/unit/test_config.py checks that every SOULX_* name the code reads is here.
RESERVED_ENV = frozenset({
    "SOULX_CONFIG", "SOULX_ESPEAK", "SOULX_MATTE_MODEL", "SOULX_WORKER_DOC", "SOULX_BENCH_CHILD",
    "SOULX_GOLDEN_DIR", "SOULX_GOLDEN_FLASHHEAD_DIR", "SOULX_OBS_ALPHA_SHOT",
})


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key, where it came from and the fix."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- engine ---------------------------------------------------------------------------------------


class LiteConfig(_Section):
    """The CPU lite renderer."""

    width: int = Field(512, gt=0)
    height: int = Field(512, gt=0)
    fps: int = Field(25, gt=0)
    frames_per_chunk: int = Field(5, gt=0)
    blinks: bool = True
    idle_motion: bool = True


class FlashTalkConfig(_Section):
    """Runtime settings of the FlashTalk engine (the architecture comes from the weights' config.json)."""

    height: int = Field(768, gt=0, multiple_of=16)
    width: int = Field(448, gt=0, multiple_of=16)
    fps: int = Field(25, gt=0)
    frame_num: int = Field(33, gt=1)
    motion_frames: int = Field(5, gt=0)
    steps: int = Field(4, gt=0)
    shift: float = Field(5.0, gt=0)
    dtype: Literal["bf16", "fp32"] = "bf16"
    color_correction: float = Field(1.0, ge=0.0, le=1.0)
    audio_buffer_s: float = Field(8.0, gt=0)
    compile: bool = False
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"  # reduce-overhead runs as default (no per-block CUDA graphs)
    fp8: bool = False  # e4m3 GEMMs in the DiT blocks (Ada/Hopper; error vs bf16: benchmarks/results/fp8_error_*.json)
    # Memory modes (engine/memory.py): offload = DiT blocks in pinned host memory, streamed to the GPU one ahead;
    # fp8_weights = DiT block weights stored e4m3 (half the memory, any GPU, bf16 maths). Both: 14B on 24 GB.
    memory: Literal["resident", "offload"] = "resident"
    fp8_weights: bool = False
    cpu_offload: bool = False  # the old name of memory: offload (true = offload)
    world_size: int = Field(1, ge=1)
    nccl_timeout_s: float = Field(120.0, gt=0)
    ulysses_degree: int = Field(0, ge=0)  # 0: gcd(world_size, heads) as released
    ring_degree: int = Field(0, ge=0)  # 0: world_size // ulysses_degree
    parallel_vae: bool = True
    sp_backend: Literal["auto", "native", "xfuser"] = "auto"  # auto: xfuser when it imports on CUDA
    attention: Literal["auto", "sdpa", "flash", "math"] = "auto"  # the attention kernel (auto: probed once)
    preset: Literal["14b", "tiny-random"] = "14b"
    tiny_vae: Literal["patch", "wan"] = "patch"  # tiny-random only; wan: a tiny random WanVAE (a group splits it)

    @model_validator(mode="after")
    def _frames_fit(self) -> FlashTalkConfig:
        if (self.frame_num - 1) % 4:
            raise ValueError(f"frame_num must be 4k+1 (the VAE compresses time 4x), got {self.frame_num}; 33 is the released value")
        if not 0 < self.motion_frames < self.frame_num:
            raise ValueError(f"motion_frames must be between 1 and frame_num-1, got {self.motion_frames} with frame_num {self.frame_num}")
        return self


class FlashHeadConfig(FlashTalkConfig):
    """Runtime settings of the SoulX-FlashHead Pro engine: FlashTalk's fields, FlashHead's released defaults
    (512x512; 12 heads, so Ulysses degrees 2, 3, 4, 6 or 12)."""

    height: int = Field(512, gt=0, multiple_of=16)
    width: int = Field(512, gt=0, multiple_of=16)
    preset: Literal["pro", "tiny-random"] = "pro"  # type: ignore[assignment]


class DriftConfig(_Section):
    """Per-chunk drift monitor against the reference and retrospective self-correction."""

    enabled: bool = True
    color_shift_max: float = Field(12.0, gt=0)  # mean Lab distance of a chunk from the reference
    sharpness_ratio_min: float = Field(0.35, gt=0)  # Laplacian variance relative to the reference (blur)
    sharpness_ratio_max: float = Field(4.0, ge=0)  # ... upper bound (grain, noise artefacts); 0: none
    similarity_min: float = Field(0.35, ge=-1.0, le=1.0)  # structural similarity to the reference
    motion_norm_ratio_max: float = Field(2.0, gt=1.0)  # motion-latent RMS relative to the reference latent
    regenerate: bool = True  # regenerate the offending chunk when the deadline allows
    regenerate_deadline: Literal["realtime", "always"] = "realtime"  # always: even past the chunk's duration
    regenerate_budget: float = Field(1.0, gt=0)  # realtime: both attempts within this x the chunk's duration
    reanchor_blend: float = Field(1.0, ge=0.0, le=1.0)  # 1: re-encode motion from the reference


class EngineConfig(_Section):
    """Which engine renders the avatar, and from what."""

    kind: Literal["lite", "flashtalk", "flashhead"] = "lite"
    avatar: Path | None = None
    prompt: str = ""
    seed: int = 0
    weights_dir: Path | None = None
    device: str | None = None
    lite: LiteConfig = LiteConfig()
    flashtalk: FlashTalkConfig = FlashTalkConfig()
    flashhead: FlashHeadConfig = FlashHeadConfig()
    drift: DriftConfig = DriftConfig()


# --- audio, bus, sinks, supervisor, logging -------------------------------------------------------


class AudioConfig(_Section):
    """Where the speech comes from."""

    source: Literal["file", "mic", "loopback", "push", "script"] = "file"
    file: Path | None = None
    device: str | None = None
    sample_rate: int = Field(16000, gt=0)
    realtime: bool = True


class TtsConfig(_Section):
    """Offline text-to-speech for `soulx-live say`, pushed text and timed scripts."""

    backend: Literal["espeak", "piper"] = "espeak"
    voice: str = "en-us"  # espeak-ng voice name
    rate_wpm: int = Field(160, gt=0)  # espeak-ng speaking rate
    piper_model: Path | None = None  # a Piper voice (.onnx, its .onnx.json beside it)
    script: Path | None = None  # timed lines for audio.source=script
    loop_script: bool = False


class BusConfig(_Section):
    """The ZeroMQ sockets between daemon, engine and sinks."""

    transport: Literal["ipc", "tcp"] = "ipc"
    runtime_dir: Path | None = None
    tcp_host: str = "127.0.0.1"
    tcp_port: int = Field(47800, ge=1, le=65535 - 8)
    hwm_chunks: int = Field(2, ge=1)


class SinksConfig(_Section):
    """The outputs; each section is defined next to its sink in :mod:`plugins.settings`."""

    recorder: RecorderConfig = RecorderConfig()
    virtualcam: VirtualCamConfig = VirtualCamConfig()
    virtualmic: VirtualMicConfig = VirtualMicConfig()
    obs: ObsConfig = ObsConfig()


class SupervisorConfig(_Section):
    """Engine process supervision: timeouts and the restart budget."""

    init_timeout_s: float = Field(600.0, gt=0)  # spawn -> Ready (FlashTalk loads and compiles)
    # Ready -> the first chunk: StartSession (avatar encoding) and the first chunk (warm-up) may block the loop, and
    # so its heartbeats, far longer than any later chunk; a worker silent longer than this meanwhile is hung
    startup_timeout_s: float = Field(120.0, gt=0)
    # after the first chunk: no heartbeat, or no chunk with audio waiting, for this long -> kill and restart. It
    # must exceed the slowest healthy chunk; 10 s is ~5x a slow GPU chunk. Heartbeats come every
    # min(1, heartbeat_timeout_s / 5) s, and status says "stalled" after two of them are missed (sooner than this)
    heartbeat_timeout_s: float = Field(10.0, gt=0)
    shutdown_grace_s: float = Field(10.0, ge=0)
    max_restarts: int = Field(3, ge=0)
    restart_window_s: float = Field(300.0, gt=0)
    # wait before restart 1, 2, 3...; the last repeats. The first is immediate: a crash costs only the worker's
    # start-up; waiting helps only a fault that repeats, which the later restarts back off from
    restart_backoff_s: tuple[float, ...] = (0.0, 2.0, 10.0)
    # audio kept for a replacement worker: everything sent since the last sample the worker put into a published
    # chunk is replayed to its successor, so a crash loses nothing; beyond this the oldest is dropped (and reported).
    # 15 s covers a hang (heartbeat_timeout_s) plus the restart; the outage replayed stays as added latency
    replay_max_s: float = Field(15.0, ge=0)
    isolation: Literal["auto", "process", "thread"] = "auto"  # auto: process for live input
    memory_limit_mb: float | None = Field(None, gt=0)  # engine RSS above this: planned restart
    leak_mb_per_hour: float = Field(256.0, gt=0)  # sustained RSS growth above this: warn, then restart


class PushConfig(_Section):
    """The push API: external apps send PCM or text and receive speech events."""

    enabled: bool = True  # the ZeroMQ endpoint (ipc in the runtime dir unless bus.transport=tcp)
    http_enabled: bool = False
    http_host: str = "127.0.0.1"
    http_port: int = Field(47880, ge=0, le=65535)  # 0: any free port (logged)
    http_timeout_s: float = Field(10.0, gt=0)  # a client's time to send its headers, and again its body
    # The token: the config file or SOULX_PUSH__TOKEN, or a file (token_file); never --set, which every
    # local user sees in the process list. Neither: generated at start into <runtime_dir>/push.token (0600).
    token: SecretStr | None = None
    token_file: Path | None = None  # a file holding the token (first line); keep it mode 0600
    max_packet_s: float = Field(30.0, gt=0)  # longest PCM packet accepted
    max_queued_s: float = Field(120.0, gt=0)  # pushed audio waiting to play, at most; more: 429 queue_full

    @model_validator(mode="after")
    def _one_token_source(self) -> PushConfig:
        if self.token is not None and self.token_file is not None:
            raise ValueError("set push.token or push.token_file, not both")
        if self.max_queued_s < self.max_packet_s:
            raise ValueError(f"push.max_queued_s ({self.max_queued_s:g}) is below push.max_packet_s "
                             f"({self.max_packet_s:g}): a longest packet could never be queued; raise max_queued_s")
        return self


class MetricsConfig(_Section):
    """The Prometheus endpoint."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(47890, ge=0, le=65535)  # 0: any free port


class RemoteConfig(_Section):
    """The remote engine (``soulx-live serve`` on the GPU machine, ``soulx-live run --remote`` on the laptop)."""

    address: str | None = None  # client: HOST:PORT of `soulx-live serve` (set: the engine runs there)
    host: str = "127.0.0.1"  # server: the interface to listen on (0.0.0.0: every interface, needs CURVE keys)
    port: int = Field(47900, ge=0, le=65535)  # server: the TCP port (0: any free port, logged)
    keys_dir: Path | None = None  # where `soulx-live keys` writes and both ends read keys (default: ~/.config/soulx-live/keys)
    server_public_key: str | None = None  # client: the server's public key, Z85 text or a .key file path
    allowed_clients_dir: Path | None = None  # server: a folder of client public keys (*.key) allowed in (default: keys_dir/allowed)
    insecure_plaintext: bool = False  # allow plaintext TCP to/from a non-loopback address (no CURVE): never on the internet
    video_bitrate: int = Field(3_000_000, ge=100_000, le=100_000_000)  # H.264 target, bits per second
    video_preset: str = "veryfast"  # libx264 preset (zero-latency tuning is always on)
    video_encoder: str = "auto"  # auto: the first H.264 encoder that opens here (NVENC, QSV, AMF, then libx264)
    audio_codec: Literal["pcm"] = "pcm"  # audio down and up: 16-bit PCM
    link_timeout_s: float = Field(2.0, gt=0)  # nothing heard for this long: the link is down (client reconnects, server ends the session)
    jitter_max_s: float = Field(0.3, ge=0)  # the jitter buffer never holds more than this
class StudioConfig(_Section):
    """The local control page (:mod:`soulx_live.studio`): preview, controls and health in a browser."""

    enabled: bool | None = None  # None: on for `soulx-live run`, off for embedded daemons and `demo`
    host: str = "127.0.0.1"
    port: int = Field(47880, ge=0, le=65535)  # 0: any free port; the push API's HTTP routes share it
    open_browser: bool = False  # `soulx-live run --open`
    preview_quality: int = Field(80, ge=10, le=100)  # JPEG quality of the preview frames
    max_upload_mb: float = Field(15.0, gt=0)  # largest avatar image accepted


class LoggingConfig(_Section):
    """Arguments of :func:`soulx_live.log.setup_logging`."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class SoulxConfig(_Section):
    """The whole daemon configuration. Frozen: derive variants with ``model_copy(update=...)``."""

    engine: EngineConfig = EngineConfig()
    audio: AudioConfig = AudioConfig()
    bus: BusConfig = BusConfig()
    sinks: SinksConfig = SinksConfig()
    supervisor: SupervisorConfig = SupervisorConfig()
    tts: TtsConfig = TtsConfig()
    push: PushConfig = PushConfig()
    metrics: MetricsConfig = MetricsConfig()
    remote: RemoteConfig = RemoteConfig()
    studio: StudioConfig = StudioConfig()
    logging: LoggingConfig = LoggingConfig()

    def to_yaml(self) -> str:
        """The effective configuration as YAML, secrets masked (for ``doctor`` / ``config show``)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# --- schema walking -------------------------------------------------------------------------------

_Kind = Literal["section", "path", "text", "value"]


@dataclass(frozen=True)
class _Key:
    """What the loader needs to know about one dotted key."""

    kind: _Kind  # section: nested model; path: resolved against a base folder; text: never YAML-parsed
    nullable: bool
    secret: bool


def _key_info(annotation: Any) -> _Key:
    args = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    types_ = tuple(a for a in args if a is not type(None))
    kind: _Kind = "value"
    if any(isinstance(a, type) and issubclass(a, BaseModel) for a in types_):
        kind = "section"
    elif Path in types_:
        kind = "path"
    elif all(a in (str, SecretStr) for a in types_):
        kind = "text"
    return _Key(kind, len(types_) < len(args), SecretStr in types_)


def _schema(model: type[BaseModel] = SoulxConfig, prefix: str = "") -> dict[str, _Key]:
    """Every dotted key of ``model``, sections included."""
    out: dict[str, _Key] = {}
    for name, info in model.model_fields.items():
        key = prefix + name
        out[key] = _key_info(info.annotation)
        if out[key].kind == "section":
            out.update(_schema(info.annotation, key + "."))
    return out


_Schema = Mapping[str, _Key]


@dataclass(frozen=True)
class _Source:
    """Where a layer came from, for error messages."""

    label: str  # "packaged defaults ...", "config file /x/y.yaml", "environment", "command-line flag"
    env: bool = False  # keys are spelled SOULX_SECTION__KEY
    keyed: bool = False  # each key is its own item (flags): name it

    def name(self, key: str) -> str:
        return f"{ENV_PREFIX}{key.upper().replace('.', ENV_NESTING)}" if self.env else key

    def where(self, key: str) -> str:
        if self.env:
            return f"environment variable {self.name(key)}"
        return f"{self.label} '{key}'" if self.keyed else self.label


def _closest(key: str, schema: _Schema) -> tuple[str | None, str]:
    """The most likely intended key (a near-identical full key, else a similar sibling) and the
    deepest existing parent of ``key`` ("" for the top level)."""
    parent = key.rpartition(".")[0]
    while parent and parent not in schema:
        parent = parent.rpartition(".")[0]
    close = difflib.get_close_matches(key, list(schema), n=1, cutoff=0.85)
    if close:
        return close[0], parent
    siblings = {k.rpartition(".")[2]: k for k in schema if k.rpartition(".")[0] == parent}
    leaf = key[len(parent) + 1 :] if parent else key
    close = difflib.get_close_matches(leaf, list(siblings), n=1, cutoff=0.6)
    return (siblings[close[0]] if close else None), parent


def _unknown_key(key: str, source: _Source, schema: _Schema) -> ConfigError:
    guess, parent = _closest(key, schema)
    if guess is not None:
        hint = f"did you mean '{guess}'" + (f" ({source.name(guess)})" if source.env else "") + "?"
    else:
        valid = [k.rpartition(".")[2] for k in schema if k.rpartition(".")[0] == parent]
        hint = f"valid keys{f' under {parent!r}' if parent else ''}: {', '.join(valid)}"
    return ConfigError(f"unknown config key '{key}' in {source.where(key)}; {hint}")


# --- layers ---------------------------------------------------------------------------------------


def _flatten(data: Mapping[str, Any], source: _Source, schema: _Schema, prefix: str = "") -> dict[str, Any]:
    """Nested YAML mapping -> {dotted key: value}, rejecting unknown keys; sections must be mappings."""
    flat: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = f"{prefix}{raw_key}"
        if key not in schema:
            raise _unknown_key(key, source, schema)
        if schema[key].kind != "section":
            flat[key] = value
        elif isinstance(value, Mapping):
            flat.update(_flatten(value, source, schema, key + "."))
        elif value is not None:  # `engine:` with every sub-key commented out is just empty
            raise ConfigError(f"'{key}' in {source.where(key)} must be a mapping of keys, got {value!r}")
    return flat


def _parse_text(key: str, raw: str, source: _Source, schema: _Schema) -> Any:
    """A string from the environment or a flag -> the value it means for ``key``."""
    info = schema[key]
    if info.kind == "text":
        return raw
    if info.kind == "path":
        return None if info.nullable and raw.strip().lower() in ("", "null", "none") else raw
    try:
        return yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse the value of '{key}' in {source.where(key)} ({raw!r}): {exc}") from exc


def _resolve_paths(flat: dict[str, Any], base: Path, schema: _Schema) -> None:
    for key, value in flat.items():
        if schema[key].kind == "path" and isinstance(value, (str, Path)):
            path = Path(os.path.expanduser(str(value)))
            flat[key] = path if path.is_absolute() else base / path


def _read_yaml(text: str, source: _Source) -> Mapping[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source.label} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source.label} must hold a mapping of sections (engine:, audio:, ...), got {type(data).__name__}")
    return data


def _env_layer(env: Mapping[str, str], source: _Source, schema: _Schema) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in RESERVED_ENV:
            continue
        key = name[len(ENV_PREFIX):].lower().replace(ENV_NESTING, ".")
        if key not in schema:
            raise _unknown_key(key, source, schema)
        if schema[key].kind == "section":
            raise ConfigError(f"environment variable {name} names the section '{key}'; set one key in it, e.g. {name}{ENV_NESTING}KEY=value")
        flat[key] = _parse_text(key, env[name], source, schema)
    _resolve_paths(flat, Path.cwd(), schema)
    return flat


def _override_layer(overrides: Mapping[str, object], source: _Source, schema: _Schema) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in schema:
            raise _unknown_key(key, source, schema)
        if schema[key].kind == "section":
            raise ConfigError(f"command-line flag '{key}' names a section; set one key in it, e.g. '{key}.KEY=value'")
        flat[key] = _parse_text(key, value, source, schema) if isinstance(value, str) else value
    _resolve_paths(flat, Path.cwd(), schema)
    return flat


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def _where(key: str, origin: Mapping[str, str]) -> str:
    """The source(s) of ``key``; for a section, the sources of the keys set in it."""
    if key in origin:
        return origin[key]
    inside = sorted({src for k, src in origin.items() if k.startswith(key + ".") and not src.startswith("packaged")})
    if inside:
        return ", ".join(inside)
    parent = key.rpartition(".")[0]  # an item of a list-valued key: "supervisor.restart_backoff_s.1"
    return origin.get(parent, "packaged defaults")


def _validation_error(exc: ValidationError, origin: Mapping[str, str], schema: _Schema) -> ConfigError:
    lines = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"])
        where = _where(key, origin)
        secret = key in schema and schema[key].secret
        got = "" if secret or err["type"].startswith("value_error") else f" (got {err['input']!r})"
        lines.append(f"'{key}' from {where}: {err['msg']}{got}")
    return ConfigError("invalid configuration:\n  " + "\n  ".join(lines))


def load_config(
    path: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> SoulxConfig:
    """Assemble the configuration: packaged defaults < ``path`` < ``env`` < ``overrides``.

    ``env`` defaults to ``os.environ`` (read now, not at import); pass ``{}`` to ignore the environment.
    Raises :class:`ConfigError` for unknown keys, unparsable values and failed validation.
    """
    schema = _schema()
    origin: dict[str, str] = {}
    merged: dict[str, Any] = {}

    def apply(flat: Mapping[str, Any], source: _Source) -> None:
        merged.update(flat)
        origin.update({key: source.where(key) for key in flat})

    defaults = _Source("packaged defaults (soulx_live/configs/default.yaml)")
    text = resources.files("soulx_live").joinpath("configs/default.yaml").read_text(encoding="utf-8")
    apply(_flatten(_read_yaml(text, defaults), defaults, schema), defaults)
    if path is not None:
        path = Path(path).expanduser().resolve()
        source = _Source(f"config file {path}")
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
        flat = _flatten(_read_yaml(text, source), source, schema)
        _resolve_paths(flat, path.parent, schema)
        apply(flat, source)
    source = _Source("environment", env=True)
    apply(_env_layer(os.environ if env is None else env, source, schema), source)
    source = _Source("command-line flag", keyed=True)
    apply(_override_layer(overrides or {}, source, schema), source)
    try:
        return SoulxConfig.model_validate(_nest(merged))
    except ValidationError as exc:
        raise _validation_error(exc, origin, schema) from None

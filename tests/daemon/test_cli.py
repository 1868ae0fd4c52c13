"""The ``soulx-live`` command line: help, doctor, devices, status, render, config errors, exit codes."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from daemon_fakes import tone, write_audio  # noqa: E402

from engine.extras import MissingExtraError, require  # noqa: E402
from engine.loading.layout import WEIGHT_DIRS, WEIGHT_FILES, weights_problems  # noqa: E402
from soulx_live import cli  # noqa: E402
from soulx_live.doctor import format_table  # noqa: E402

CHECKOUT = Path(__file__).resolve().parents[2]
SMALL = ["--set", "engine.lite.width=128", "--set", "engine.lite.height=128"]


@pytest.fixture(autouse=True)
def _private_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test touches the user's real runtime folder or config."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    for name in [n for n in __import__("os").environ if n.startswith("SOULX_")]:
        monkeypatch.delenv(name)


def test_help_lists_every_command() -> None:
    proc = subprocess.run([sys.executable, "-m", "soulx_live", "--help"], capture_output=True, text=True, cwd=CHECKOUT, timeout=60)
    assert proc.returncode == 0
    for command in ("run", "demo", "render", "devices", "doctor", "status"):
        assert command in proc.stdout
    assert cli.main([]) == cli.EXIT_USAGE


def test_doctor_lists_rows(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["doctor"])
    out = capsys.readouterr().out
    for name in ("config", "python", "torch", "PyAV", "flash-attn", "xfuser", "v4l2loopback", "OBS websocket", "FlashTalk weights"):
        assert name in out, f"doctor has no {name!r} row:\n{out}"
    assert code in (cli.EXIT_OK, cli.EXIT_FAILURE)
    assert "ok" in out.split()


def test_doctor_reports_a_config_error_as_a_failed_row(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["doctor", "--set", "engine.kindd=lite"]) == cli.EXIT_FAILURE
    out = capsys.readouterr().out
    assert "FAIL  config" in out and "engine.kind" in out


def test_doctor_table_marks_fixes() -> None:
    from soulx_live.doctor import Check

    table = format_table([Check("a", True, "fine"), Check("b", False, "broken", "do x", required=True), Check("c", None, "off", "do y")])
    lines = table.splitlines()
    assert lines[0].startswith("ok") and lines[1].startswith("FAIL") and "fix: do x" in lines[2] and lines[3].startswith("--")


def test_weights_folder_check(tmp_path: Path) -> None:
    folder = tmp_path / "SoulX-FlashTalk-14B"
    folder.mkdir()
    assert any("config.json" in p for p in weights_problems(folder))
    for name in WEIGHT_FILES:
        (folder / name).write_bytes(b"x")
    for name in WEIGHT_DIRS:
        (folder / name).mkdir(parents=True)
    (tmp_path / "chinese-wav2vec2-base").mkdir()
    shards = ["diffusion_pytorch_model-00001-of-00002.safetensors", "diffusion_pytorch_model-00002-of-00002.safetensors"]
    index = {"weight_map": {"a": shards[0], "b": shards[1]}}
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    (folder / shards[0]).write_bytes(b"x")
    (folder / shards[1]).write_bytes(b"")
    assert weights_problems(folder) == [f"{shards[1]} is empty"]
    (folder / shards[1]).write_bytes(b"x")
    assert weights_problems(folder) == []


def test_devices_without_sounddevice_names_the_extra(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # makes `import sounddevice` raise ImportError
    assert cli.main(["devices"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert 'pip install "soulx-live[audio]"' in out
    assert "Cameras" in out


def test_require_names_the_install_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyvirtualcam", None)
    with pytest.raises(MissingExtraError, match=r'pip install "soulx-live\[vcam\]"'):
        require("pyvirtualcam", "vcam", "the virtual camera")
    assert require("json", "x") is json


def test_status_without_daemon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["status", "--set", f"bus.runtime_dir={tmp_path / 'rt'}", "--timeout", "0.3"])
    assert code == cli.EXIT_NO_DAEMON
    err = capsys.readouterr().err
    assert "no daemon is running" in err and "soulx-live run" in err
    assert "Traceback" not in err


def test_stale_socket_without_daemon_times_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runtime = tmp_path / "rt"
    runtime.mkdir(mode=0o700)
    (runtime / "cli.ipc").write_text("")  # left behind by a crashed daemon
    assert cli.main(["status", "--set", f"bus.runtime_dir={runtime}", "--timeout", "0.3"]) == cli.EXIT_NO_DAEMON
    assert "no daemon" in capsys.readouterr().err


def test_bad_set_key_shows_the_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status", "--set", "engine.kindd=lite"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown config key 'engine.kindd'" in err and "engine.kind" in err
    assert cli.main(["status", "--set", "novalue"]) == cli.EXIT_USAGE
    assert "KEY=VALUE" in capsys.readouterr().err


def test_render_produces_synced_mp4(tmp_path: Path) -> None:
    from plugins.recorder import probe_media

    wav = write_audio(tmp_path / "speech.wav", tone(1.3, 44100, 220.0, channels=2), 44100)
    out = tmp_path / "out" / "render.mp4"
    assert cli.main(["render", str(wav), "-o", str(out), "--no-progress", *SMALL]) == cli.EXIT_OK
    info = probe_media(out)
    assert (info.video_codec, info.audio_codec, info.width, info.height) == ("h264", "aac", 128, 128)
    assert info.frames == 35  # 1.3 s -> 7 chunks of 5 frames (the last one padded with silence)
    assert abs(info.video_s - info.audio_s) <= 1 / 25


def test_render_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["render", str(tmp_path / "missing.wav"), "-o", str(tmp_path / "x.mp4")]) == cli.EXIT_FAILURE
    err = capsys.readouterr().err
    assert err == f"soulx-live: error: audio file not found: {tmp_path / 'missing.wav'}\n"
    wav = write_audio(tmp_path / "s.wav", tone(0.3, 16000), 16000)
    code = cli.main(["render", str(wav), "--avatar", str(tmp_path / "nobody.png"), "-o", str(tmp_path / "x.mp4")])
    assert code == cli.EXIT_FAILURE and "avatar image not found" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()


def test_progress_bar_without_tqdm(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from soulx_live.render import Progress

    monkeypatch.setitem(sys.modules, "tqdm", None)
    stream = io.StringIO()
    bar = Progress(4, "chunks", stream=stream)
    for _ in range(4):
        bar.update()
    bar.close()
    assert "100%" in stream.getvalue() and "4/4 chunks" in stream.getvalue()


def test_json_logs_carry_the_process_name() -> None:
    import io

    from soulx_live.log import setup_logging

    stream = io.StringIO()
    handler = setup_logging("INFO", fmt="json", process_name="engine-r0", stream=stream)
    try:
        logging.getLogger("soulx_live.test").info("hello %s", "there")
    finally:
        logging.getLogger().removeHandler(handler)
    record = json.loads(stream.getvalue().splitlines()[-1])
    assert record["proc"] == "engine-r0" and record["msg"] == "hello there" and record["level"] == "INFO"

"""Timed scripts: parsing with line-numbered errors, scheduling on one timeline, the source and its phonemes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from soulx_live.config import TtsConfig
from soulx_live.tts import TtsError, build_tts
from soulx_live.tts.script import DEFAULT_GAP_S, parse_script
from soulx_live.tts.script_source import ScriptSource

SR = 16000


def test_parse_times_voices_and_comments() -> None:
    lines = parse_script("# rundown\n\n00:05 Welcome back.\n+2 First story.\nRight after.\n"
                         "[voice=en-gb] 1:02.5 In another voice.\n3.5 Seconds work too.\n")
    assert [(l.line_no, l.at_s, l.after_s, l.voice) for l in lines] == [
        (3, 5.0, 0.0, None), (4, None, 2.0, None), (5, None, DEFAULT_GAP_S, None), (6, 62.5, 0.0, "en-gb"),
        (7, 3.5, 0.0, None)]
    assert lines[0].text == "Welcome back." and lines[3].text == "In another voice."


@pytest.mark.parametrize("text, where", [("00:05\n", ":1:"), ("hello\n+3\n", ":2:"), ("# only comments\n", "no lines")])
def test_bad_scripts_name_the_line(text: str, where: str) -> None:
    with pytest.raises(TtsError, match=where):
        parse_script(text, "show.txt")


def test_source_schedules_lines_without_overlap_and_reports_phonemes(tmp_path: Path) -> None:
    script = tmp_path / "show.txt"
    script.write_text("00:01 Hello there.\n+0.5 Papa met Bob.\n00:00.5 Too early, so it waits.\n")
    source = ScriptSource(script, build_tts(TtsConfig()), sample_rate=SR, block_samples=640, realtime=False)
    starts = [item.start_sample for item in source.lines]
    ends = [item.start_sample + item.utterance.pcm.shape[0] for item in source.lines]
    assert starts[0] == SR
    assert starts[1] == ends[0] + SR // 2
    assert starts[2] == ends[1]  # an absolute time already passed: right after the previous line
    got: list[list[tuple[int, int, str]]] = []
    source.on_phonemes = got.append
    pcm = np.concatenate(list(source.blocks()))
    assert pcm.shape[0] == source.total_samples
    assert np.all(pcm[:SR] == 0.0)
    assert len(got) == 3
    for item, spans in zip(source.lines, got):
        assert spans[0][0] >= item.start_sample and spans[-1][1] <= item.start_sample + item.utterance.pcm.shape[0] + 1
    assert source.duration_s == pytest.approx(source.total_samples / SR)


def test_loop_offsets_phonemes_by_the_script_length(tmp_path: Path) -> None:
    script = tmp_path / "loop.txt"
    script.write_text("Again and again.\n")
    source = ScriptSource(script, build_tts(TtsConfig()), sample_rate=SR, realtime=False, loop=True)
    got: list[list[tuple[int, int, str]]] = []
    source.on_phonemes = got.append
    blocks = source.blocks()
    n = 0
    for block in blocks:
        n += block.shape[0]
        if n > 2.5 * source.total_samples:
            break
    source.stop()
    assert len(got) == 3
    assert got[1][0][0] - got[0][0][0] == source.total_samples

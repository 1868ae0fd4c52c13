"""Timed scripts: a host's rundown as plain text, one spoken line per text line.

    # comments and blank lines are ignored
    00:05 Welcome back to the show.        start 5 s after the script starts (mm:ss, hh:mm:ss, or seconds: 5.5)
    +2 Here is the first story.            start 2 s after the previous line has finished speaking
    And then straight on.                  no time: right after the previous line (as "+0.3")
    [voice=en-gb] +1 A line in another voice.

An absolute time earlier than the end of the previous line starts the line when the previous one ends (lines
never overlap); the parser keeps the line numbers so every error names the line.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from soulx_live.tts.base import TtsError

__all__ = ["DEFAULT_GAP_S", "ScriptLine", "parse_script"]

DEFAULT_GAP_S = 0.3  # a line without a time follows the previous one after this breath
_VOICE = re.compile(r"^\[voice=([^\]\s]+)\]\s*")
_ABSOLUTE = re.compile(r"^(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)$|^(\d+(?:\.\d+)?)$")
_RELATIVE = re.compile(r"^\+(\d+(?:\.\d+)?)$")


@dataclass(frozen=True)
class ScriptLine:
    line_no: int
    text: str
    at_s: float | None  # absolute start from the script start, or None
    after_s: float  # gap after the previous line when ``at_s`` is None
    voice: str | None = None


def _parse_time(token: str) -> tuple[float | None, float | None]:
    """(absolute, relative) from a leading token; (None, None) when it is not a time."""
    rel = _RELATIVE.match(token)
    if rel:
        return None, float(rel.group(1))
    m = _ABSOLUTE.match(token)
    if not m:
        return None, None
    if m.group(4) is not None:
        return float(m.group(4)), None
    hours = int(m.group(1) or 0)
    return hours * 3600 + int(m.group(2)) * 60 + float(m.group(3)), None


def parse_script(text: str, source: str = "<script>") -> list[ScriptLine]:
    """The lines of a script; :class:`TtsError` names the file and line of the first problem."""
    lines: list[ScriptLine] = []
    for no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        voice = None
        m = _VOICE.match(line)
        if m:
            voice, line = m.group(1), line[m.end():]
        token, _, rest = line.partition(" ")
        at, after = _parse_time(token)
        if at is None and after is None:
            if re.match(r"^[+\d:.]+$", token) and not rest:
                raise TtsError(f"{source}:{no}: a time with nothing to say; write the text after the time")
            at, after, rest = None, DEFAULT_GAP_S, line
        elif not rest.strip():
            raise TtsError(f"{source}:{no}: a time with nothing to say; write the text after the time")
        lines.append(ScriptLine(no, rest.strip(), at, after if after is not None else 0.0, voice))
    if not lines:
        raise TtsError(f"{source}: the script has no lines to speak (see README: scripted hosts for the format)")
    return lines


def read_script(path: Path) -> list[ScriptLine]:
    try:
        return parse_script(Path(path).read_text(encoding="utf-8"), str(path))
    except FileNotFoundError:
        raise TtsError(f"script not found: {path} (tts.script)") from None

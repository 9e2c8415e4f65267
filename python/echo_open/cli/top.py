"""Text and JSON of the summary views (``echo-open top``, ``--summary``): pure functions of
a ``summary.Top`` and the interval's figures; the CLI writes what they make.

Text follows the table's escaping rules (render.escape): a path or process name cannot
forge a row, and what echo-open adds to a path starts with a lone backslash, which no
file name prints (``\\...`` a path cut at its end, ``\\(unreadable)`` no path could be read).
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
from dataclasses import dataclass

from ..render import CUT_MARK, escape
from ..summary import ErrorCount, PathCount, ProcessCount, Top

UNREADABLE_MARK = "\\(unreadable)"
# ANSI: cursor home, clear the screen
CLEAR_SCREEN = "\x1b[H\x1b[2J"
# lines of a frame besides the rows: 2 of header, a blank and a column header before each
# of the three tables, and room for the "other" lines
FRAME_OVERHEAD = 2 + 3 * 2 + 2


@dataclass(frozen=True)
class Interval:
    """What one frame covers."""

    kind: str            # "interval" or "summary" (the whole run)
    wall_ns: int         # when it ended
    seconds: float       # how long it lasted
    lost: int            # events the kernel counted as lost in it
    sort: str
    max_paths: int       # the tables' key limits, named when something fell out
    max_processes: int


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


def _path_text(row: PathCount) -> str:
    if row.unreadable:
        return UNREADABLE_MARK
    return escape(row.path_bytes) + (CUT_MARK if row.truncated else "")


def _error_column(name: str | None) -> str:
    return f"{name or '':<10}"


def text(top: Top, interval: Interval) -> str:
    """One frame (or the run's summary) as lines of text, no escapes."""
    totals = top.totals
    stamp = _dt.datetime.fromtimestamp(interval.wall_ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")
    seconds = interval.seconds
    title = "echo-open top" if interval.kind == "interval" else "echo-open summary"
    lines = [
        f"{title}  {stamp}  {seconds:.2f} s  sort {interval.sort}",
        f"opens {_rate(totals.opens, seconds):.1f}/s  errors {_rate(totals.errors, seconds):.1f}/s"
        f"  lost {_rate(interval.lost, seconds):.1f}/s  ({totals.opens} opens, "
        f"{totals.errors} errors, {interval.lost} lost)",
        "",
        f"{'OPENS':>9} {'ERRORS':>9} {'ERROR':<10} PATH",
    ]
    lines += [f"{row.opens:>9} {row.errors:>9} {_error_column(row.last_error)} {_path_text(row)}"
              for row in top.paths]
    if totals.other_paths.opens:
        lines.append(f"{totals.other_paths.opens:>9} {totals.other_paths.errors:>9} "
                     f"{'':<10} \\(other: more than {interval.max_paths} paths)")
    lines += ["", f"{'OPENS':>9} {'ERRORS':>9} {'ERROR':<10} {'PID':<7} COMM"]
    lines += [f"{row.opens:>9} {row.errors:>9} {_error_column(row.last_error)} {row.pid:<7} "
              f"{escape(row.comm_bytes, field=True)}" for row in top.processes]
    if totals.other_processes.opens:
        lines.append(f"{totals.other_processes.opens:>9} {totals.other_processes.errors:>9} "
                     f"{'':<10} \\(other: more than {interval.max_processes} processes)")
    lines += ["", f"{'COUNT':>9} {'ERRNO':>9} ERROR"]
    lines += [f"{row.count:>9} {row.errno:>9} {row.error}" for row in top.errors]
    if totals.other_errnos:
        lines.append(f"{totals.other_errnos:>9} {'':>9} \\(other errnos)")
    return "\n".join(lines) + "\n"


def fit(frame: str, columns: int, lines: int) -> str:
    """A frame cut to the terminal, so it never scrolls (escaped text is one cell a char,
    but for wide characters)."""
    cut = [line[:columns] for line in frame.splitlines()[:max(1, lines - 1)]]
    return CLEAR_SCREEN + "\n".join(cut) + "\n"


def _text_and_b64(raw: bytes) -> tuple[str, str | None]:
    """As the JSON lines do: the UTF-8 text, and base64 of the bytes when they are not."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace"), base64.b64encode(raw).decode("ascii")


def _path_json(row: PathCount) -> dict[str, object]:
    path, path_b64 = _text_and_b64(row.path_bytes)
    return {"path": path, "path_b64": path_b64, "truncated": row.truncated,
            "unreadable": row.unreadable, "opens": row.opens, "errors": row.errors,
            "error": row.last_error}


def _process_json(row: ProcessCount) -> dict[str, object]:
    comm, comm_b64 = _text_and_b64(row.comm_bytes)
    return {"pid": row.pid, "comm": comm, "comm_b64": comm_b64, "opens": row.opens,
            "errors": row.errors, "error": row.last_error}


def _error_json(row: ErrorCount) -> dict[str, object]:
    return {"errno": row.errno, "error": row.error, "count": row.count}


def as_json(top: Top, interval: Interval) -> str:
    """One frame (or the run's summary) as one line of ASCII JSON."""
    totals = top.totals
    seconds = interval.seconds
    stamp = _dt.datetime.fromtimestamp(interval.wall_ns // 1_000_000_000, _dt.timezone.utc)
    micros = interval.wall_ns % 1_000_000_000 // 1000
    record = {
        "kind": interval.kind,
        "time": f"{stamp:%Y-%m-%dT%H:%M:%S}.{micros:06d}Z",
        "seconds": round(seconds, 6),
        "opens": totals.opens, "errors": totals.errors, "lost": interval.lost,
        "opens_per_s": round(_rate(totals.opens, seconds), 3),
        "errors_per_s": round(_rate(totals.errors, seconds), 3),
        "lost_per_s": round(_rate(interval.lost, seconds), 3),
        "sort": interval.sort,
        "paths": [_path_json(row) for row in top.paths],
        "processes": [_process_json(row) for row in top.processes],
        "errors_by_errno": [_error_json(row) for row in top.errors],
        "other": {"paths": totals.other_paths._asdict(),
                  "processes": totals.other_processes._asdict(),
                  "errnos": totals.other_errnos},
    }
    return json.dumps(record) + "\n"

"""Driving Debian's `wrk` (4.x) and reading what it prints.

`run_wrk` runs one load (`wrk -tT -cC -dDs --latency --timeout 30s`, a long timeout so a slow answer
is measured rather than dropped as a socket timeout) in its own session, killed if we are interrupted;
`parse_wrk` turns its report into a `WrkResult`: requests per second, the latency percentiles of
`--latency` (in milliseconds), and every kind of error wrk counts. `CREATE_LUA` is the script for
`POST /api/instances`: every request has its own Idempotency-Key and instance name, and the writers' tokens
(comma-separated, its first argument) take turns.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

INSTALL_HINT = ("wrk is not installed: `apt-get install -y wrk` (Debian's package, wrk 4.x), "
                "or build it from https://github.com/wg/wrk and put it on PATH")

_TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_SIZE = r"([0-9.]+)(us|ms|s|m|h)"
_PERCENTILE = re.compile(r"^\s*([0-9.]+)%\s+" + _SIZE + r"\s*$", re.MULTILINE)
_REQUESTS = re.compile(r"^\s*(\d+) requests in " + _SIZE + r",", re.MULTILINE)
_RATE = re.compile(r"^Requests/sec:\s+([0-9.]+)\s*$", re.MULTILINE)
_LATENCY = re.compile(r"^\s*Latency\s+" + _SIZE + r"\s+" + _SIZE + r"\s+" + _SIZE, re.MULTILINE)
_NON_2XX = re.compile(r"^\s*Non-2xx or 3xx responses:\s+(\d+)", re.MULTILINE)
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed something this parser does not understand."""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run. Latencies are in milliseconds; `percentiles_ms` maps 50.0, 75.0, 90.0, 99.0 to them."""

    requests: int
    seconds: float
    requests_per_second: float
    latency_avg_ms: float
    latency_max_ms: float
    percentiles_ms: dict[float, float] = field(default_factory=dict)
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)

    @property
    def p50_ms(self) -> float:
        return self.percentiles_ms.get(50.0, float("nan"))

    @property
    def p99_ms(self) -> float:
        return self.percentiles_ms.get(99.0, float("nan"))

    @property
    def errors(self) -> int:
        """Answers that were not 2xx/3xx, plus connect/read/write errors and timeouts."""
        return self.non_2xx + sum(self.socket_errors.values())


def to_ms(number: str, unit: str) -> float:
    return float(number) * _TIME_UNITS_MS[unit]


def parse_wrk(text: str) -> WrkResult:
    """Parse wrk's report (with `--latency`); raise WrkError if its totals are not there."""
    requests, rate = _REQUESTS.search(text), _RATE.search(text)
    if requests is None or rate is None:
        raise WrkError(f"unrecognised wrk output:\n{text[-2000:]}")
    latency = _LATENCY.search(text)
    avg = to_ms(*latency.group(1, 2)) if latency else float("nan")
    peak = to_ms(*latency.group(5, 6)) if latency else float("nan")
    percentiles = {float(m.group(1)): to_ms(m.group(2), m.group(3)) for m in _PERCENTILE.finditer(text)}
    non_2xx = _NON_2XX.search(text)
    socket = _SOCKET.search(text)
    socket_errors = ({k: int(v) for k, v in zip(("connect", "read", "write", "timeout"), socket.groups(),
                                                  strict=True)} if socket else {})
    return WrkResult(
        requests=int(requests.group(1)),
        seconds=to_ms(requests.group(2), requests.group(3)) / 1000,
        requests_per_second=float(rate.group(1)),
        latency_avg_ms=avg,
        latency_max_ms=peak,
        percentiles_ms=percentiles,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=socket_errors,
    )


def wrk_binary() -> str:
    binary = shutil.which("wrk")
    if binary is None:
        raise WrkError(INSTALL_HINT)
    return binary


def run_wrk(url: str, *, threads: int, connections: int, duration: float, headers: dict[str, str] | None = None,
            script: Path | None = None, script_args: list[str] | None = None, timeout: str = "30s") -> WrkResult:
    """One wrk run against `url`; its report parsed. Killed (with its session) if we are interrupted."""
    command = [wrk_binary(), f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency",
               "--timeout", timeout]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    if script is not None:
        command += ["-s", str(script)]
    command.append(url)
    if script_args:
        command += ["--", *script_args]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=duration + 120)
    except BaseException:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        raise
    if proc.returncode != 0:
        raise WrkError(f"wrk exited with {proc.returncode}: {err.strip() or out.strip()}")
    return parse_wrk(out)


#: wrk script for `POST /api/instances`. Arguments after `--`: the bearer token, then a prefix that is unique
#: to this run (a letter first). Each request: `Idempotency-Key: PREFIX-THREAD-N` and the name `PREFIX-THREAD-N`.
CREATE_LUA = """\
local thread_counter = 0

function setup(thread)
  thread_counter = thread_counter + 1
  thread:set("tid", thread_counter)
end

function init(args)
  tokens = {}
  for t in string.gmatch(args[1], "[^,]+") do tokens[#tokens + 1] = t end
  prefix = args[2]
  n = 0
end

function request()
  n = n + 1
  local key = prefix .. "-" .. tid .. "-" .. n
  local body = '{"kind":"game","name":"' .. key .. '","template":"minecraft"}'
  local headers = {
    ["Authorization"] = "Bearer " .. tokens[(n + tid) % #tokens + 1],
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = key,
  }
  return wrk.format("POST", nil, headers, body)
end
"""

"""The wrk report parser of bench/wrk.py, on reports as Debian's wrk 4.1 prints them (no wrk needed)."""

from __future__ import annotations

import pytest

from bench.wrk import WrkError, parse_wrk

CLEAN = """\
Running 8s test @ http://127.0.0.1:41169/healthz
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    20.41ms   18.73ms 119.02ms   83.12%
    Req/Sec   791.46    160.12     1.12k    70.00%
  Latency Distribution
     50%   16.02ms
     75%   27.90ms
     90%   48.83ms
     99%   96.40ms
  12640 requests in 8.01s, 1.76MB read
Requests/sec:   1578.06
Transfer/sec:    225.42KB
"""

SLOW_WITH_ERRORS = """\
Running 8s test @ http://127.0.0.1:8000/api/instances
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   640.12ms  310.50ms    1.71s    66.20%
    Req/Sec    18.33     11.02    60.00     73.10%
  Latency Distribution
     50%  612.00ms
     75%  850.33ms
     90%    1.12s
     99%    1.65s
  262 requests in 8.10s, 98.21KB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:     32.35
Transfer/sec:     12.12KB
"""


def test_rate_percentiles_and_totals() -> None:
    result = parse_wrk(CLEAN)
    assert result.requests == 12640
    assert result.seconds == pytest.approx(8.01)
    assert result.requests_per_second == pytest.approx(1578.06)
    assert result.percentiles_ms == pytest.approx({50.0: 16.02, 75.0: 27.90, 90.0: 48.83, 99.0: 96.40})
    assert result.p50_ms == pytest.approx(16.02)
    assert result.p99_ms == pytest.approx(96.40)
    assert result.latency_avg_ms == pytest.approx(20.41)
    assert result.latency_max_ms == pytest.approx(119.02)
    assert result.errors == 0


def test_seconds_and_microseconds_become_milliseconds_and_errors_are_counted() -> None:
    result = parse_wrk(SLOW_WITH_ERRORS)
    assert result.p99_ms == pytest.approx(1650.0)
    assert result.percentiles_ms[90.0] == pytest.approx(1120.0)
    assert result.latency_max_ms == pytest.approx(1710.0)
    assert result.non_2xx == 7
    assert result.socket_errors == {"connect": 0, "read": 3, "write": 0, "timeout": 2}
    assert result.errors == 12
    assert parse_wrk(CLEAN.replace("16.02ms", "950.00us")).p50_ms == pytest.approx(0.95)


def test_a_report_without_totals_is_an_error() -> None:
    with pytest.raises(WrkError, match="unrecognised"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")

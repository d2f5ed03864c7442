"""The serve load bench at the issue's scale: no 5xx, /health quick, memory given back."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import serve_load  # noqa: E402


def test_fifty_mixed_requests_with_10_mb_bodies_leave_the_server_healthy():
    result = serve_load.measure(50)
    table = serve_load.table(result)
    assert result["server_errors"] == 0, table
    big = {status for (kind, status) in result["answers"] if kind == "10 MB body"}
    assert 413 in big and big <= {413, 429}, table  # refused unread: too large, or over the in-flight limit
    assert sum(n for (kind, status), n in result["answers"].items() if status == 200) >= 30, table
    assert result["health_answers"] >= 3 and result["health_failures"] == 0, table
    assert result["health_slowest_s"] < 1.0, table
    assert result["rss_after_mb"] <= 1.2 * result["rss_start_mb"], table

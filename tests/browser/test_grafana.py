"""The Grafana dashboard in docs/grafana only queries series the master really exposes."""

import json
import re
import urllib.request

from conftest import REPO

DASHBOARD = REPO / "docs" / "grafana" / "tidepool-dashboard.json"


def exposed_names(admin):
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_grafana_dashboard_queries_exposed_series(cluster):
    dash = json.loads(DASHBOARD.read_text())
    names = exposed_names(cluster["admin"])
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert exprs
    used = set()
    for e in exprs:
        assert e.count("(") == e.count(")"), e
        for name in re.findall(r"([A-Za-z_:][A-Za-z0-9_:]*)\{", e):
            used.add(name)
        for pattern in re.findall(r'__name__=~"([^"]+)"', e):
            assert any(re.fullmatch(pattern, n) for n in names), f"{pattern} matches nothing"
    missing = sorted(used - names)
    assert not missing, f"dashboard queries series the master does not expose: {missing}"
    # The main figures are on it.
    for n in ("master_key_count", "master_allocated_bytes", "valid_get_nums_", "tidepool_rpc_latency_seconds_bucket"):
        assert n in used, n
    for p in dash["panels"]:
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]

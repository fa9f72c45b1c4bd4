"""Browser test of the master dashboard: a real cluster under load, the page in headless
chromium, and the figures it shows compared with /metrics (parsed by prometheus_client)."""

import json
import subprocess
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from conftest import tidepool_bin

# Names the contract (§4.6) requires on the master, as sample names.
REQUIRED = [
    "master_allocated_bytes",
    "master_total_capacity_bytes",
    "segment_allocated_bytes",
    "segment_total_capacity_bytes",
    "master_key_count",
    "master_soft_pin_key_count",
    "master_active_clients",
    "master_value_size_bytes_bucket",
    "master_value_size_bytes_sum",
    "master_value_size_bytes_count",
    "master_put_start_alloc_failures_total",
    "master_put_start_partial_allocations_total",
    "master_put_start_discard_cnt",
    "master_put_start_release_cnt",
    "master_attempted_evictions_total",
    "master_successful_evictions_total",
    "master_evicted_key_count",
    "master_evicted_size_bytes",
    "mem_cache_hit_nums_",
    "mem_cache_hit_bytes_total",
    "valid_get_nums_",
    "total_get_nums_",
]
OPS = [
    "put_start", "put_end", "put_revoke", "get_replica_list", "exist_key", "remove",
    "remove_by_regex", "remove_all", "mount_segment", "unmount_segment", "remount_segment", "ping",
]
BATCH_OPS = ["put_start", "put_end", "put_revoke", "get_replica_list", "exist_key"]
REQUIRED += [f"master_{op}_{k}_total" for op in OPS for k in ("requests", "failures")]
REQUIRED += [
    f"master_batch_{op}_{k}_total"
    for op in BATCH_OPS
    for k in ("requests", "failures", "partial_successes", "items", "failed_items")
]

# Figures on the page (element id) and the series they must equal.
FIGURES = {
    "key-count": "master_key_count",
    "soft-pin-key-count": "master_soft_pin_key_count",
    "allocated-bytes": "master_allocated_bytes",
    "capacity-bytes": "master_total_capacity_bytes",
    "active-clients": "master_active_clients",
    "segment-count": "tidepool_segments",
    "get-hits": "valid_get_nums_",
    "get-total": "total_get_nums_",
    "exist-hits": "tidepool_exist_hits_total",
    "evicted-keys": "master_evicted_key_count",
    "evicted-bytes": "master_evicted_size_bytes",
    "dead-clients": "tidepool_dead_clients_total",
    "revoked-puts": "tidepool_revoked_puts_by_liveness_total",
}


def http(url, method="GET"):
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read().decode()


def scrape(admin):
    """/metrics parsed: {(sample name, frozenset(labels)): value}, and the families."""
    status, ctype, text = http(f"http://{admin}/metrics")
    assert status == 200
    assert ctype.startswith("text/plain"), ctype
    families = list(text_string_to_metric_families(text))
    samples = {}
    for fam in families:
        for s in fam.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = s.value
    return families, samples


def value(samples, name, **labels):
    """A series by its exposed name. The parser renames counters that lack the `_total`
    suffix (Mooncake's `valid_get_nums_`) to `<name>_total`, so that spelling is tried too."""
    key = frozenset(labels.items())
    if (name, key) in samples:
        return samples[(name, key)]
    return samples[(name + "_total", key)]


def fmt_bytes(n):
    """The page's fmtBytes, for comparing visible text."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    v, i = float(n), 0
    while v >= 1024 and i < len(units) - 1:
        v /= 1024
        i += 1
    if i == 0:
        return f"{v:.0f} B"
    return f"{v:.2f} {units[i]}" if v < 10 else f"{v:.1f} {units[i]}"


def page_figures(driver):
    return driver.execute_script(
        """
        const out = {};
        for (const id of arguments[0]) {
          const el = document.getElementById(id);
          out[id] = el ? {raw: el.dataset.value, text: el.textContent} : null;
        }
        out.rows = [...document.querySelectorAll('#segments tbody tr')].map(
          (tr) => [tr.dataset.segment, tr.dataset.used, tr.dataset.capacity]);
        out.latency = Object.fromEntries([...document.querySelectorAll('#latency tbody tr')].map(
          (tr) => [tr.dataset.op, Number(tr.dataset.requests)]));
        out.updates = Number(document.body.dataset.updates || 0);
        return out;
        """,
        list(FIGURES) + ["hit-ratio", "role", "exist-keys", "exist-hit-ratio"],
    )


def wait_for(cond, timeout_s, what):
    deadline = time.time() + timeout_s
    last = None
    while time.time() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def compare(driver, admin):
    """Mismatches between the page and /metrics (empty when they agree)."""
    fig = page_figures(driver)
    _, samples = scrape(admin)
    bad = []
    for el, name in FIGURES.items():
        want = value(samples, name)
        got = fig[el]
        if got is None or got["raw"] == "" or float(got["raw"]) != want:
            bad.append(f"{el}: page {got} vs {name}={want}")
    rows = sorted((s, float(u), float(c)) for s, u, c in fig["rows"])
    metric_rows = sorted(
        (dict(lbl)["segment"], v, value(samples, "segment_total_capacity_bytes", segment=dict(lbl)["segment"]))
        for (n, lbl), v in samples.items()
        if n == "segment_allocated_bytes"
    )
    if rows != metric_rows:
        bad.append(f"segments: page {rows} vs metrics {metric_rows}")
    exist_keys = value(samples, "tidepool_rpc_keys_total", op="exist")
    if fig["exist-keys"] is None or float(fig["exist-keys"]["raw"] or "nan") != exist_keys:
        bad.append(f"exist-keys: page {fig['exist-keys']} vs {exist_keys}")
    for op in ("put_start", "put_end", "get_replicas"):
        want = value(samples, "tidepool_rpc_latency_seconds_count", op=op)
        if fig["latency"].get(op) != want:
            bad.append(f"latency row {op}: page {fig['latency'].get(op)} vs {want}")
    return bad, fig, samples


def test_metrics_parse_cleanly_with_required_names(cluster):
    families, samples = scrape(cluster["admin"])
    # Presence is checked on the exposition itself (the parser renames some counters).
    _, _, text = http(f"http://{cluster['admin']}/metrics")
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    missing = [n for n in REQUIRED if n not in names]
    assert not missing, f"missing from /metrics: {missing}"
    buckets = sorted(
        float(dict(lbl)["le"]) for (n, lbl) in samples if n == "master_value_size_bytes_bucket"
    )
    assert buckets[0] == 4096 and buckets[-2] == 64 << 20 and buckets[-1] == float("inf")
    ops = {dict(lbl).get("op") for (n, lbl) in samples if n == "tidepool_rpc_latency_seconds_bucket"}
    assert {"put_start", "get_replicas", "heartbeat"} <= ops
    types = {f.name: f.type for f in families}
    assert types["master_value_size_bytes"] == "histogram"
    assert types["master_key_count"] == "gauge"
    for seg in cluster["segments"]:
        assert value(samples, "segment_total_capacity_bytes", segment=seg) > 0


def test_dashboard_shows_what_metrics_say(cluster, browser, out_dir):
    rpc, admin = cluster["rpc"], cluster["admin"]
    # Load: bench (batch puts and gets of two sizes, 4 KiB single-op latency, exist
    # batches; it removes its objects at the end), then fill leaves objects in the pool.
    bench = subprocess.run(
        [tidepool_bin(), "bench", "--master", rpc, "--sizes", "64KiB,1MiB", "--total", "32MiB",
         "--latency-ops", "200", "--no-shm"],
        capture_output=True, text=True, timeout=600,
    )
    (out_dir / "bench.txt").write_text(bench.stdout + bench.stderr)
    assert bench.returncode == 0, bench.stderr[-2000:]
    for prefix, count, size in (("dash-big", 64, "256KiB"), ("dash-small", 100, "4KiB")):
        fill = subprocess.run(
            [tidepool_bin(), "fill", "--master", rpc, "--prefix", prefix, "--count", str(count),
             "--size", size, "--no-shm"],
            capture_output=True, text=True, timeout=300,
        )
        assert fill.returncode == 0, fill.stdout[-1000:] + fill.stderr[-1000:]
    _, samples = scrape(admin)
    assert value(samples, "master_key_count") == 164
    assert value(samples, "master_allocated_bytes") >= 64 * 256 * 1024 + 100 * 4096
    assert value(samples, "valid_get_nums_") > 0
    assert value(samples, "master_batch_put_start_items_total") > 0
    # bench checks 64-key exist batches of keys it wrote: all found.
    assert value(samples, "tidepool_exist_hits_total") == value(samples, "tidepool_rpc_keys_total", op="exist") > 0

    browser.get(f"http://{admin}/dashboard")
    assert "Tidepool" in browser.title
    wait_for(lambda: page_figures(browser)["updates"] >= 1, 15, "first dashboard update")
    # The page polls; allow a few polls for it to catch up with the last writes.
    deadline = time.time() + 10
    bad, fig, samples = compare(browser, admin)
    while bad and time.time() < deadline:
        time.sleep(0.5)
        bad, fig, samples = compare(browser, admin)
    assert not bad, bad

    # Visible text, not only the data attributes.
    keys = int(value(samples, "master_key_count"))
    assert fig["key-count"]["text"] == f"{keys:,}"
    assert fig["capacity-bytes"]["text"] == fmt_bytes(value(samples, "master_total_capacity_bytes"))
    assert fig["allocated-bytes"]["text"] == fmt_bytes(value(samples, "master_allocated_bytes"))
    ratio = value(samples, "valid_get_nums_") / value(samples, "total_get_nums_")
    assert fig["hit-ratio"]["text"] == f"{100 * ratio:.1f} %"
    assert fig["exist-hit-ratio"]["text"] == "100.0 %"
    assert fig["role"]["text"] == "leader · serving"
    assert sorted(r[0] for r in fig["rows"]) == sorted(cluster["segments"])

    # The charts have the load in them: the feed's history shows puts, and the ops chart has
    # pixels in the put series colour.
    # The master samples its counters once a second, and on a fast machine the whole load
    # fits between two samples: wait (a few samples at most) for one taken after it.
    def history():
        _, _, body = http(f"http://{admin}/api/v1/dashboard")
        return json.loads(body)["history"]

    def loaded(hist):
        return any(p["put_ops"] > 0 for p in hist) and any(p["get_bytes_per_s"] > 0 for p in hist)

    try:
        wait_for(lambda: loaded(history()), 5, "a history sample after the load")
    except AssertionError:
        raise AssertionError(f"no load in the history: {history()[-5:]}") from None
    time.sleep(1.6)  # one more poll so the chart was drawn with that history
    browser.save_screenshot(str(out_dir / "dashboard.png"))
    series_rgb = [(79, 195, 247), (129, 199, 132), (255, 183, 77)]
    for chart in ("chart-ops", "chart-gbps", "chart-used"):
        coloured = browser.execute_script(
            """
            const [id, colours] = arguments;
            const c = document.getElementById(id);
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 4)
              for (const [r, g, b] of colours)
                if (Math.abs(d[i] - r) < 16 && Math.abs(d[i+1] - g) < 16 && Math.abs(d[i+2] - b) < 16) n++;
            return n;
            """,
            chart, series_rgb,
        )
        assert coloured > 10, f"{chart} draws no series line ({coloured} pixels)"

    # Live: empty the pool over the admin API and watch the page follow.
    status, _, body = http(f"http://{admin}/api/v1/remove_all?force=true", method="POST")
    assert status == 200 and json.loads(body)["removed"] == keys
    wait_for(lambda: page_figures(browser)["key-count"]["raw"] == "0", 10, "page to show 0 objects")
    bad, fig, _ = compare(browser, admin)
    assert not bad, bad
    assert fig["allocated-bytes"]["text"] == "0 B"
    browser.save_screenshot(str(out_dir / "dashboard-after-remove-all.png"))

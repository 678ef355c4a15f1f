"""Prometheus metrics through a real Prometheus server: every PromQL expression of the shipped
Grafana dashboards returns data after a smoke run."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.integration.conftest import run_cli

DASHBOARDS = sorted((REPO / "deploy/grafana/dashboards").glob("*.json"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prometheus_binary() -> str:
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if found is None and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "prometheus"], check=False, capture_output=True)
        found = shutil.which("prometheus")
    if found is None:
        pytest.skip("Debian's prometheus is not installed and apt-get cannot install it here")
    return found


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture()
def prometheus(tmp_path: Path):
    metrics_port, web_port = _free_port(), _free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\n"
        f"scrape_configs: [{{job_name: openrs, static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]}}]\n"
    )
    cmd = [_prometheus_binary(), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
           f"--web.listen-address=127.0.0.1:{web_port}"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{web_port}/-/ready", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        yield metrics_port, f"http://127.0.0.1:{web_port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_every_dashboard_query_has_data(prometheus, smoke_overrides: list[str], out_dir: Path) -> None:
    metrics_port, api = prometheus
    args = [f"metrics.prometheus_port={metrics_port}", "metrics.prometheus_host=127.0.0.1", "metrics.linger_s=6"]
    proc, left = run_cli("train", "configs/smoke.yaml", *smoke_overrides, *args, f"output_dir={out_dir}")
    assert proc.returncode == 0 and not left, proc.stderr[-3000:]
    # Query at the last scrape of the run (the endpoint lingers after the last step, then goes away).
    scraped = _get(f"{api}/api/v1/query?" + urllib.parse.urlencode({"query": "openrs_steps_total[15m]"}))
    at = float(scraped["data"]["result"][0]["values"][-1][0])
    exprs = [t["expr"] for d in DASHBOARDS for p in json.loads(d.read_text())["panels"] for t in p["targets"]]
    assert len(DASHBOARDS) == 2 and len(exprs) >= 20
    empty = []
    for expr in exprs:
        query = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
        body = _get(f"{api}/api/v1/query?{query}")
        assert body["status"] == "success", (expr, body)
        if not body["data"]["result"]:
            empty.append(expr)
    assert empty == [], f"dashboard queries without data: {empty}"
    tokens = _get(
        f"{api}/api/v1/query?" + urllib.parse.urlencode({"query": "sum(openrs_rollout_tokens_total)", "time": at})
    )
    assert float(tokens["data"]["result"][0]["value"][1]) > 0

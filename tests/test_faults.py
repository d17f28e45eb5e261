"""Faults a 48-hour run must survive: signals, kill -9 and restart, a Pushgateway outage.

Real processes, real signals, the real Pushgateway binary; every wait bounded.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import http_get, loadsim_process, require_binary, sample_value

from loadsim.cli import main

OK = {"provider": "google", "action": "gmail.send", "status": "ok"}

SLOW_SENDS = """
name = "slow-sends"
[model.errors]
gmail_timeout = 0.05        # 5% of sends take the relay's 30 s timeout: always some in flight
"""


def write_profile(tmp_path: Path, text: str = SLOW_SENDS) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path


class TestSignals:
    def test_sigterm_drains_within_grace_and_counts_every_send(self, tmp_path: Path) -> None:
        summary = tmp_path / "summary.json"
        with loadsim_process(
            "run",
            str(write_profile(tmp_path)),
            "--rate",
            "100/s",
            "--duration",
            "10m",
            "--grace",
            "2s",
            "--listen",
            "127.0.0.1:0",
            "--progress",
            "off",
            "--summary-json",
            str(summary),
        ) as child:
            url = str(child.wait_for_event("metrics.listening")["url"])
            time.sleep(2.0)
            in_flight = sample_value(http_get(url), "loadsim_sends_in_flight")
            assert in_flight is not None
            assert in_flight > 5  # timeouts in flight: the drain has work to do
            child.proc.send_signal(signal.SIGTERM)
            t0 = time.monotonic()
            code = child.finish(timeout=15)
            took = time.monotonic() - t0
        assert code == 0
        assert took < 2.0 + 1.0, took
        s = json.loads(summary.read_text())["sends"]
        # Every send that started is counted exactly once: finished, or abandoned at the grace limit.
        assert s["started"] == s["finished"] + s["abandoned"]
        assert s["abandoned"] > 0
        assert any(e.get("event") == "run.stopping" for e in child.events)

    def test_a_second_signal_exits_at_once(self, tmp_path: Path) -> None:
        with loadsim_process(
            "run",
            str(write_profile(tmp_path)),
            "--rate",
            "100/s",
            "--duration",
            "10m",
            "--grace",
            "60s",
            "--no-listen",
            "--progress",
            "off",
        ) as child:
            child.wait_for_event("run.start")
            time.sleep(1.0)
            child.proc.send_signal(signal.SIGTERM)
            child.wait_for_event("run.stopping")
            t0 = time.monotonic()
            child.proc.send_signal(signal.SIGTERM)
            code = child.finish(timeout=10)
        assert code == 128 + signal.SIGTERM
        assert time.monotonic() - t0 < 2.0


class TestKillAndResume:
    def test_kill_9_then_restart_resumes_and_no_counter_goes_backwards(self, tmp_path: Path) -> None:
        state = tmp_path / "run.state"
        profile = write_profile(tmp_path, 'name = "resume"\n')
        common = (
            "run",
            str(profile),
            "--rate",
            "50/s",
            "--duration",
            "1h",
            "--listen",
            "127.0.0.1:0",
            "--state",
            str(state),
            "--checkpoint-interval",
            "1s",
            "--progress",
            "off",
        )
        scrapes: list[float] = []
        with loadsim_process(*common, "--fresh") as first:
            url = str(first.wait_for_event("metrics.listening")["url"])
            for _ in range(8):
                time.sleep(0.5)
                scrapes.append(sample_value(http_get(url), "action_exec_total", **OK) or 0.0)
            first.proc.kill()  # SIGKILL: no drain, no final checkpoint
            first.proc.wait(timeout=5)
            killed_at = time.monotonic()
        with loadsim_process(*common) as second:
            resumed = second.wait_for_event("state.resumed")
            url = str(second.wait_for_event("metrics.listening")["url"])
            after = sample_value(http_get(url), "action_exec_total", **OK) or 0.0
            time.sleep(1.5)
            later = sample_value(http_get(url), "action_exec_total", **OK) or 0.0
            second.proc.send_signal(signal.SIGTERM)
            assert second.finish(timeout=60) == 0
        # Counters never go backwards: the exposition only ever showed checkpointed totals.
        assert scrapes == sorted(scrapes)
        assert after >= scrapes[-1]
        assert later > after
        # The schedule resumed from the last checkpoint (at most one interval before the kill),
        # and the downtime is accounted as missed arrivals, not replayed in a burst.
        downtime = time.monotonic() - killed_at
        assert resumed["run_seconds"] - resumed["checkpoint_run_seconds"] <= downtime + 1.0 + 0.5
        assert resumed["missed_while_down"] > 0

    def test_virtual_run_resumes_exactly_where_it_stopped(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        state = tmp_path / "v.state"
        args = ["run", "--virtual", "--no-listen", "--progress", "off", "--rate", "20/s", "--state", str(state)]
        out1, out2 = tmp_path / "a.json", tmp_path / "b.json"
        assert main([*args, "--duration", "30m", "--fresh", "--summary-json", str(out1)]) == 0
        # The same run extended: another duration is another profile, so it is refused.
        assert main([*args, "--duration", "1h", "--summary-json", str(out2)]) == 2
        assert "has changed since this state was written" in capsys.readouterr().err


class TestBadStateFiles:
    def test_missing_file_needs_fresh(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        path = tmp_path / "none.state"
        assert main(["run", "--virtual", "--no-listen", "--duration", "1m", "--state", str(path)]) == 2
        assert capsys.readouterr().err.strip() == (
            f"loadsim: {path}: no state file; pass --fresh to start a new run, "
            "or --fresh-if-missing to create it when absent"
        )

    def test_corrupt_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        path = tmp_path / "bad.state"
        path.write_bytes(b"not a state file")
        assert main(["run", "--virtual", "--no-listen", "--duration", "1m", "--state", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"loadsim: {path}: not a readable loadsim state file (")
        assert "Traceback" not in err

    def test_another_seed(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        path = tmp_path / "s.state"
        base = ["run", "--virtual", "--no-listen", "--progress", "off", "--duration", "5m", "--state", str(path)]
        assert main([*base, "--seed", "1", "--fresh-if-missing"]) == 0
        capsys.readouterr()
        assert main([*base, "--seed", "2"]) == 2
        assert capsys.readouterr().err.strip() == (
            f"loadsim: {path}: written by profile 'default' with seed 1, this run is 'default' with seed 2; "
            "pass --fresh to start a new run (the old file is kept as .bak)"
        )
        assert main([*base, "--seed", "2", "--fresh"]) == 0
        assert (tmp_path / "s.state.bak").exists()


@pytest.mark.slow
def test_pushgateway_down_for_30s_loses_nothing_with_either_driver(tmp_path: Path) -> None:
    """Stop the real Pushgateway for 30 s while a simulated and an HTTP run push to it (one group each).

    After it returns, each run's pushed totals equal its local totals. Both drivers share the
    one outage, so the test waits through it once.
    """
    from test_http_driver import Server

    from loadsim.testing.stack import Pushgateway

    require_binary("prometheus-pushgateway")
    drivers = ("sim", "http")
    summaries = {d: tmp_path / f"{d}.json" for d in drivers}
    with Pushgateway() as gateway, Server() as target, contextlib.ExitStack() as children:  # started on entry
        port = gateway.port
        runs = {}
        for driver in drivers:
            traffic = ["--driver", "http", "--target", target.url] if driver == "http" else []
            runs[driver] = children.enter_context(
                loadsim_process(
                    "run", *traffic, "--rate", "100/s", "--duration", "2h", "--no-listen", "--progress", "off",
                    "--pushgateway", gateway.url, "--push-interval", "1s", "--push-instance", f"loadsim-{driver}",
                    "--keep-group", "--summary-json", str(summaries[driver]),
                )
            )  # fmt: skip
        for child in runs.values():
            child.wait_for_event("push.start")
        time.sleep(3.0)
        gateway.terminate()
        outage_started = time.monotonic()
        for child in runs.values():
            child.wait_for_event("push.outage", timeout=10)
        time.sleep(max(0.0, 30.0 - (time.monotonic() - outage_started)))
        gateway.port = port  # the same address, as a restarted Pushgateway would have
        gateway.proc = subprocess.Popen(gateway.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        gateway.wait_ready(timeout=20)
        for child in runs.values():
            child.wait_for_event("push.recovered", timeout=60)
        time.sleep(2.0)
        for child in runs.values():
            child.proc.send_signal(signal.SIGTERM)
        for child in runs.values():
            assert child.finish(timeout=60) == 0
        pushed = http_get(f"{gateway.url}/metrics")
    for driver, child in runs.items():
        local = json.loads(summaries[driver].read_text())
        group = {"job": "relay_synth", "instance": f"loadsim-{driver}"}
        if driver == "sim":
            assert sample_value(pushed, "action_exec_total", **group, **OK) == local["by_status"]["ok"]
            assert sample_value(pushed, "action_exec_total", **group, status="error") == local["by_status"]["error"]
        else:
            ok = local["by_result"]["2xx"]
            assert sample_value(pushed, "loadsim_http_requests_total", **group, result="2xx") == ok
            assert ok == local["requests"]["finished"] > 2000
        noun = "sends" if driver == "sim" else "requests"
        assert sample_value(pushed, "loadsim_sends_started_total", **group) == local[noun]["started"]
        failures = sample_value(pushed, "loadsim_push_failures_total", **group)
        assert failures is not None
        assert failures > 3  # retried with backoff through the outage, counted
        events = [e["event"] for e in child.events]
        assert events.count("push.outage") == 1  # logged once per outage, not per attempt
        assert events.count("push.recovered") == 1
        # The run kept its rate while the Pushgateway was down (open model, push off the loop).
        assert local["achieved_rate_per_s"] == pytest.approx(100, rel=0.05)


class TestHttpDriverState:
    def test_kill_9_then_restart_resumes_and_no_counter_goes_backwards(self, tmp_path: Path) -> None:
        from test_http_driver import Server

        state = tmp_path / "http.state"
        summary = tmp_path / "s.json"
        with Server() as target:
            common = (
                "run", "--driver", "http", "--target", target.url, "--rate", "100/s", "--duration", "1h",
                "--listen", "127.0.0.1:0", "--state", str(state), "--checkpoint-interval", "1s", "--progress", "off",
            )  # fmt: skip
            scrapes: list[float] = []
            with loadsim_process(*common, "--fresh") as first:
                url = str(first.wait_for_event("metrics.listening")["url"])
                for _ in range(8):
                    time.sleep(0.5)
                    scrapes.append(sample_value(http_get(url), "loadsim_http_requests_total", result="2xx") or 0.0)
                first.proc.kill()  # SIGKILL: no drain, no final checkpoint
                first.proc.wait(timeout=5)
            with loadsim_process(*common, "--summary-json", str(summary)) as second:
                resumed = second.wait_for_event("state.resumed")
                url = str(second.wait_for_event("metrics.listening")["url"])
                after = sample_value(http_get(url), "loadsim_http_requests_total", result="2xx") or 0.0
                time.sleep(1.5)
                later = sample_value(http_get(url), "loadsim_http_requests_total", result="2xx") or 0.0
                second.proc.send_signal(signal.SIGTERM)
                assert second.finish(timeout=60) == 0
        assert scrapes == sorted(scrapes)
        assert scrapes[-1] > 0
        assert after >= scrapes[-1]
        assert later > after
        assert resumed["missed_while_down"] > 0
        s = json.loads(summary.read_text())
        # The resumed run carries the first run's counts: every request started is finished or abandoned
        # (those out when the last checkpoint was taken count as abandoned).
        assert s["requests"]["started"] == s["requests"]["finished"] + s["requests"]["abandoned"]
        assert s["by_result"]["2xx"] >= later
        assert s["requests"]["started"] > 8 * 0.5 * 100 * 0.8


class TestSecrets:
    def test_push_credentials_never_reach_the_logs(self) -> None:
        # A dead Pushgateway (port 9 on loopback: nothing listens) so the outage path logs too.
        with loadsim_process(
            "run",
            "--rate",
            "20/s",
            "--duration",
            "3s",
            "--no-listen",
            "--progress",
            "json",
            "--log-level",
            "debug",
            "--pushgateway",
            "http://relay:s3cr3t-pass@127.0.0.1:9",
            "--push-interval",
            "1s",
        ) as child:
            code = child.finish(timeout=90)
        assert code == 0
        text = json.dumps(child.events) + child.stderr
        assert "s3cr3t" not in text
        assert any(e.get("event") == "push.outage" for e in child.events)
        assert any(e.get("event") == "push.final_failed" for e in child.events)

    def test_redaction_of_credential_keys_and_urls(self) -> None:
        from loadsim.logs import redact

        event = {"token": "abc", "api_key": "k", "url": "https://u:p4ss@host/x", "note": "plain"}
        assert redact(None, "info", event) == {
            "token": "***",
            "api_key": "***",
            "url": "https://u:***@host/x",
            "note": "plain",
        }

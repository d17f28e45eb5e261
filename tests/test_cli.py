"""The command line: bad input gets one clear line per problem and exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadsim.cli import main

pytestmark = pytest.mark.bad_input  # any traceback in a test's captured output fails it (conftest)


def write(tmp_path: Path, text: str, name: str = "p.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, [line for line in err.splitlines() if line], out


class TestBadProfiles:
    def test_every_problem_is_reported_at_once_with_file_and_key(self, tmp_path, capsys):
        p = write(
            tmp_path,
            'bogus = 1\nseed = "abc"\nduration = "15x"\n'
            '[[schedule]]\nkind = "constant"\nrate = 0\n'
            '[[schedule]]\nkind = "ramp"\nfrom = "1/s"\n'
            '[model.latency]\np50 = "1s"\np95 = "500ms"\n',
        )
        code, err, _ = run_main(capsys, "check", str(p))
        assert code == 2
        assert err == [
            f"loadsim: {p}: duration: expected a duration such as 30s, 15m, 48h, 1h30m or 250ms, got '15x'",
            f"loadsim: {p}: seed: input should be a valid integer, unable to parse string as an integer, got 'abc'",
            f"loadsim: {p}: schedule[0].rate: must be > 0, got 0",
            f"loadsim: {p}: schedule[1].to: required key is missing",
            f"loadsim: {p}: schedule[1].duration: required key is missing",
            f"loadsim: {p}: model.latency: p95 must be greater than p50 (1s), got 0.5s",
            f"loadsim: {p}: bogus: unknown key",
        ]

    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            ('[[schedule]]\nkind = "constant"\nrate = "-5/s"\n', "schedule[0].rate: expected a rate such as"),
            (
                '[[schedule]]\nkind = "wobble"\n',
                "schedule[0]: kind must be one of constant, ramp, steps, diurnal, got 'wobble'",
            ),
            ('[[schedule]]\nrate = "1/s"\n', "schedule[0]: kind is missing; expected one of constant, ramp, steps"),
            ("[model.errors]\ngmail_5xx = 1.5\n", "model.errors.gmail_5xx: must be <= 1, got 1.5"),
            ("[model.errors]\nnope = 0.1\n", "model: unknown outcome 'nope'; expected one of:"),
            ("[model.latency]\nbogus = 1\n", "model.latency.bogus: unknown key"),
            ('[engine]\ntick = "0s"\n', "engine.tick: must be > 0, got '0s'"),
            (
                '[metrics]\nworkspace_ids = ["a", "b"]\nworkspace_weights = [1]\n',
                "metrics: workspace_weights needs one weight per workspace id (2), got 1",
            ),
            (
                '[[schedule]]\nkind = "diurnal"\ntrough = "5/s"\npeak = "1/s"\n',
                "schedule[0]: peak (1/s) must be at least trough (5/s)",
            ),
            (
                '[[schedule]]\nkind = "constant"\nrate = "1/s"\n[[schedule]]\nkind = "constant"\nrate = "2/s"\n',
                "schedule: segment 0 (constant) needs a duration: only the last segment may run to the end",
            ),
            ('arrivals = "bursty"\n', "arrivals: input should be 'poisson' or 'even', got 'bursty'"),
        ],
    )
    def test_one_problem(self, tmp_path, capsys, body, expected):
        p = write(tmp_path, body)
        code, err, _ = run_main(capsys, "check", str(p))
        assert code == 2
        assert len(err) == 1
        assert err[0].startswith(f"loadsim: {p}: {expected}"), err[0]

    def test_missing_file(self, tmp_path, capsys):
        missing = tmp_path / "nope.toml"
        code, err, _ = run_main(capsys, "run", str(missing), "--virtual", "--no-listen")
        assert (code, err) == (2, [f"loadsim: {missing}: file not found"])

    def test_unreadable_toml(self, tmp_path, capsys):
        p = write(tmp_path, "x = = 1\n")
        code, err, _ = run_main(capsys, "check", str(p))
        assert code == 2
        assert err == [f"loadsim: {p}: not valid TOML: Invalid value (at line 1, column 5)"]

    def test_binary_file(self, tmp_path, capsys):
        p = tmp_path / "p.toml"
        p.write_bytes(b"\xff\xfe\x00")
        code, err, _ = run_main(capsys, "check", str(p))
        assert (code, err) == (2, [f"loadsim: {p}: not UTF-8 text; expected a TOML profile"])


class TestBadOptions:
    @pytest.mark.parametrize(
        ("argv", "expected"),
        [
            (
                ["--duration", "15x"],
                "loadsim: --duration: expected a duration such as 30s, 15m, 48h, 1h30m or 250ms, got '15x'",
            ),
            (["--duration", "0s"], "loadsim: --duration: must be > 0, got '0s'"),
            (["--rate=-1/s"], "loadsim: --rate: expected a rate such as 1/s, 0.5/s, 60/m or 1req/s, got '-1/s'"),
            (["--rate", "0/s"], "loadsim: --rate: must be > 0, got '0/s'"),
            (["--seed", "-3"], "loadsim: --seed: must be >= 0, got -3"),
            (["--listen", "nowhere"], "loadsim: --listen: expected HOST:PORT such as 127.0.0.1:9477, got 'nowhere'"),
        ],
    )
    def test_run_option(self, capsys, argv, expected):
        code, err, _ = run_main(capsys, "run", "--virtual", *argv)
        assert (code, err) == (2, [expected])

    def test_an_empty_pushgateway_is_refused_an_empty_variable_is_unset(self, tmp_path, capsys, monkeypatch):
        # `--pushgateway ""` is what an unset CI variable passed on looks like: refused, never "no push".
        code, err, _ = run_main(capsys, "run", "--virtual", "--no-listen", "--pushgateway", "")
        expected = (
            "loadsim: --pushgateway: is empty; expected the Pushgateway's URL, e.g. http://127.0.0.1:9091 "
            "(if a CI variable or secret should hold it, it is not set)"
        )
        assert (code, err) == (2, [expected])
        # An exported but empty PUSHGATEWAY_URL is the shell's way of saying unset: the run goes on, pushing nowhere.
        monkeypatch.setenv("PUSHGATEWAY_URL", "")
        summary = tmp_path / "summary.json"
        code, err, _ = run_main(
            capsys, "run", "--virtual", "--no-listen", "--duration", "10s", "--summary-json", str(summary)
        )
        assert (code, err) == (0, [])
        assert json.loads(summary.read_text())["sends"]["started"] > 0

    @pytest.mark.parametrize(
        "driver", [["--virtual"], ["--driver", "http", "--target", "http://127.0.0.1:9", "--rate", "1/s"]]
    )
    def test_busy_port_is_a_usage_error(self, capsys, driver):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            port = s.getsockname()[1]
            code, err, _ = run_main(capsys, "run", *driver, "--duration", "10s", "--listen", f"127.0.0.1:{port}")
        assert code == 2
        assert len(err) == 1
        assert err[0].startswith(f"loadsim: --listen: cannot listen on 127.0.0.1:{port}: ")


HTTP_RUN = ("run", "--driver", "http", "--target", "http://127.0.0.1:9")
"""The HTTP driver aimed at a port nothing answers on (these runs are refused before they start)."""


class TestEveryOptionWorksWithEveryDriverOrIsRefused:
    """An option a driver cannot honour is refused before anything runs, never silently ignored."""

    @pytest.mark.parametrize(
        ("argv", "option"),
        [
            (["--target", "http://127.0.0.1:9"], "--target"),
            (["--template", "relay"], "--template"),
            (["--timeout", "5s"], "--timeout"),
            (["--connections", "8"], "--connections"),
            (["--token-env", "HOME"], "--token-env"),
            (["--ca-file", "x.pem"], "--ca-file"),
            (["--allow-target", "example.com"], "--allow-target"),
            (["--max-rate", "5/s"], "--max-rate"),
            (["--fault-control", "http://127.0.0.1:9480"], "--fault-control"),
        ],
    )
    def test_http_options_are_refused_with_the_simulated_driver(self, capsys, argv, option):
        code, err, _ = run_main(capsys, "run", "--virtual", "--duration", "1m", *argv)
        why = "applies to --driver http only; the simulated driver has no target"
        assert (code, err) == (2, [f"loadsim: {option}: {why}"])

    def test_max_in_flight_applies_to_the_simulated_driver_too(self, tmp_path, capsys):
        out = tmp_path / "s.json"
        argv = ["run", "--virtual", "--no-listen", "--progress", "off", "--rate", "1000/s", "--duration", "1m"]
        model = write(tmp_path, 'name = "slow"\n[model.latency]\np50 = "5s"\np95 = "8s"\n')
        extra = ["--max-in-flight", "50", "--summary-json", str(out)]
        code, _, _ = run_main(capsys, *argv[:1], str(model), *argv[1:], *extra)
        assert code == 0
        sends = json.loads(out.read_text())["sends"]
        assert sends["dropped"] > 0  # at 1000/s and 5 s latency, far more than 50 would be in flight
        assert sends["started"] + sends["dropped"] == sends["scheduled"]

    @pytest.mark.parametrize(
        ("overlay", "template", "expected"),
        [
            (
                "latency-crit@0s+10s",
                "gmail",
                (
                    "loadsim: --driver http: overlay[0].scenario: latency-crit changes what Gmail answers: with "
                    "--driver http it needs --fault-control URL of a loadsim fake-gmail that the target talks to"
                ),
            ),
            (
                "validation-spike@0s+10s",
                "gmail",
                (
                    "loadsim: --driver http: overlay[0].scenario: validation-spike cannot apply to --template gmail: "
                    "the relay rejects invalid sends before Gmail, so Gmail never sees them; use --template relay"
                ),
            ),
            (
                "controller-stalled@0s+10s",
                "relay",
                (
                    "loadsim: --driver http: overlay[0].scenario: controller-stalled cannot apply to real traffic: it "
                    "acts on the rollout controller inside the relay, which traffic cannot reach"
                ),
            ),
            (
                "metrics-missing@0s+10s",
                "gmail",
                (
                    "loadsim: --driver http: overlay[0].scenario: metrics-missing cannot apply to real traffic: "
                    "it acts on the relay's metrics endpoint, not on traffic"
                ),
            ),
        ],
    )
    def test_overlays_the_http_driver_cannot_honour_are_refused(self, capsys, overlay, template, expected):
        code, err, _ = run_main(
            capsys,
            *HTTP_RUN,
            "--template",
            template,
            "--rate",
            "1/s",
            "--duration",
            "1m",
            "--overlay",
            overlay,
        )
        assert (code, err) == (2, [expected])

    def test_a_ramped_gmail_side_overlay_cannot_follow_the_control_api(self, tmp_path, capsys):
        profile = write(
            tmp_path,
            'name = "r"\n[[overlay]]\nscenario = "error-rate-crit"\nstart = "0s"\nduration = "1m"\nramp = "10s"\n',
        )
        code, err, _ = run_main(
            capsys,
            "run",
            str(profile),
            "--driver",
            "http",
            "--target",
            "http://127.0.0.1:9",
            "--fault-control",
            "http://127.0.0.1:9",
            "--rate",
            "1/s",
        )
        assert code == 2
        assert err == [
            (
                "loadsim: --driver http: overlay[0].ramp: error-rate-crit cannot ramp through the fake-gmail "
                "control API; drop the ramp"
            )
        ]

    def test_a_fault_control_that_does_not_answer_is_refused_before_the_run(self, capsys):
        code, err, _ = run_main(
            capsys,
            *HTTP_RUN,
            "--fault-control",
            "http://127.0.0.1:9",
            "--rate",
            "1/s",
            "--overlay",
            "latency-crit@0s+10s",
        )
        assert code == 2
        assert len(err) == 1
        assert err[0].startswith(
            "loadsim: --fault-control: http://127.0.0.1:9 does not answer as a loadsim fake-gmail control API ("
        )

    def test_a_fault_control_off_loopback_needs_allow_host(self, capsys):
        code, err, _ = run_main(
            capsys,
            *HTTP_RUN,
            "--fault-control",
            "http://192.0.2.7:9480",
            "--rate",
            "1/s",
        )
        assert (code, err) == (
            2,
            ["loadsim: --fault-control: 192.0.2.7 is not on loopback; allow it with --allow-host 192.0.2.7"],
        )

    @pytest.mark.parametrize("where", ["missing-dir/s.json", "."])
    def test_an_unwritable_summary_path_is_refused_before_the_run(self, tmp_path, capsys, where):
        path = tmp_path / where
        code, err, _ = run_main(capsys, "run", "--virtual", "--duration", "1m", "--summary-json", str(path))
        assert code == 2
        assert len(err) == 1
        assert err[0].startswith("loadsim: --summary-json: ")


class TestSubprocess:
    def test_bad_input_from_a_real_process_has_no_traceback(self, tmp_path):
        p = write(tmp_path, "[[schedule]]\nkind = 'constant'\nrate = -1\n")
        proc = subprocess.run(
            [sys.executable, "-m", "loadsim", "run", str(p), "--virtual"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 2
        assert "Traceback" not in proc.stderr
        assert proc.stderr.strip() == (
            f"loadsim: {p}: schedule[0].rate: expected a rate such as 1/s, 0.5/s, 60/m or 1req/s (not negative), got -1"
        )


class TestCheck:
    def test_check_describes_the_plan(self, capsys):
        code, err, out = run_main(capsys, "check", "profiles/realistic.toml", "--virtual")
        assert (code, err) == (0, [])
        assert "diurnal 1.2/s .. 6/s, peak at 14h" in out
        # 48 hours of the curve: the expected count is the schedule's integral (about 498k).
        expected = int(out.split("expected  ")[1].split(" sends")[0].replace(",", ""))
        assert 450_000 < expected < 550_000
        assert "warning" not in out  # never below 1/s: the relay's ratio stays a ratio

    def test_check_warns_below_one_send_per_second(self, capsys):
        code, _, out = run_main(capsys, "check", "--rate", "0.5/s", "--duration", "1h")
        assert code == 0
        assert "rate below 1/s for about 1h00m: job:gmail_send_errors_rate:5m divides by clamp_min" in out

    def test_check_warns_where_absolute_thresholds_fire_on_healthy_traffic(self, capsys):
        code, _, out = run_main(capsys, "check", "--rate", "400/s", "--duration", "1h")
        assert code == 0
        assert "GmailValidationErrorSpike compares an absolute rate (> 0.1/s)" in out
        assert "HighSanitizationActivity (> 50/s, absolute) will fire" in out
        code, _, out = run_main(capsys, "check", "--rate", "5/s", "--duration", "1h")
        assert "absolute" not in out


class TestRunVirtual:
    def test_summary_json_counts_every_send(self, tmp_path, capsys):
        out_file = tmp_path / "summary.json"
        code = main(
            [
                "run",
                "--virtual",
                "--no-listen",
                "--duration",
                "2h",
                "--rate",
                "3/s",
                "--seed",
                "7",
                "--progress",
                "off",
                "--summary-json",
                str(out_file),
            ]
        )
        capsys.readouterr()
        assert code == 0
        s = json.loads(out_file.read_text())
        sends = s["sends"]
        assert sends["started"] == sends["finished"] == sends["scheduled"]
        assert sends["abandoned"] == 0
        assert sum(s["by_status"].values()) == sends["finished"]
        # 2 h at 3/s: 21600 expected, Poisson sd ~147; 5 sd.
        assert abs(sends["started"] - 21600) < 5 * 147

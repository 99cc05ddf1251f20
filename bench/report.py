"""The load benchmark's report: the table of cells, the details of each, the targets
and the machine it ran on."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench import wrk
from bench.procs import QUIET_CORES

# The load benchmark's targets (issue 4); docs/performance.md reports them.
TARGET_CEILING_RATIO = 0.35
TARGET_P99_GROWTH = 0.20
TARGET_RPS = 2000.0
TARGET_DELIVERY_P99_S = 1.0


def row(result: dict[str, Any]) -> dict[str, Any]:
    send, ceiling, delivery = result["send_token"], result["healthz"], result["delivery"]
    return {
        "store": result["spec"]["label"],
        "users": result["spec"]["users"],
        # wrk's requests and the probes answered in the same window: the server did both.
        "rps": send["rps"] + send.get("probe_rps", 0.0),
        "wrk_rps": send["rps"],
        "p50_ms": send["latency_us"]["p50"] / 1000,
        "p99_ms": send["latency_us"]["p99"] / 1000,
        "ceiling_rps": ceiling["rps"],
        "ratio": send["rps"] / ceiling["rps"] if ceiling["rps"] else 0.0,
        "delivery_p50_s": delivery["latency_s"]["p50"],
        "delivery_p99_s": delivery["latency_s"]["p99"],
        "delivered": delivery["delivered"],
        "expected": delivery["expected"],
        "complete": None
        if result["spec"]["delivery"] == "none"
        else delivery["delivered"] == delivery["expected"]
        and delivery["duplicates"] == 0
        and delivery["stray"] == 0
        and send["bad"] == 0
        and delivery["probes_delivered"] == delivery["probes"],
    }


def _s(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} s"


def disturbed(result: dict[str, Any]) -> bool:
    """Was something else busy on the machine before or during the measurements?"""
    during = [
        result[part].get("cpu_cores", {}).get("other", 0.0) for part in ("healthz", "send_token")
    ]
    return bool(max([result.get("background_cores", 0.0), *during]) > QUIET_CORES)


def table(results: list[dict[str, Any]]) -> str:
    head = (
        "| store | users | /send-token req/s | p50 (wrk) | p99 (wrk) | ceiling req/s (/healthz) | "
        "ratio | delivery p50 | delivery p99 | delivered / expected |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for result in results:
        r = row(result)
        lines.append(
            f"| {r['store']} | {r['users']:,} | {r['rps']:,.0f} | {r['p50_ms']:.1f} ms | "
            f"{r['p99_ms']:.1f} ms | {r['ceiling_rps']:,.0f} | {100 * r['ratio']:.0f} % | "
            f"{_s(r['delivery_p50_s'])} | {_s(r['delivery_p99_s'])} | "
            + (
                "not delivered (--no-delivery)"
                if r["complete"] is None
                else f"{r['delivered']:,} / {r['expected']:,}{'' if r['complete'] else ' **!**'}"
            )
            + (" †" if disturbed(result) else "")
            + " |"
        )
    if any(disturbed(result) for result in results):
        lines += [
            "",
            f"† something else used more than {QUIET_CORES} cores of the machine before or "
            "during this run: its figures are low.",
        ]
    if any(row(result)["complete"] is False for result in results):
        lines += [
            "",
            "**!** not every message arrived exactly once, a message went to an unknown "
            "address, or an answer was not 202 (see the details).",
        ]
    return "\n".join(lines)


def details(results: list[dict[str, Any]]) -> str:
    lines = []
    for result in results:
        send, delivery = result["send_token"], result["delivery"]
        lines.append(
            f"- {result['spec']['label']}, {result['spec']['users']:,} users: "
            f"insert {result['insert_seconds']:.1f} s; background before the run "
            f"{result['background_cores']:.2f} cores; CPU per /send-token request "
            f"{_cpu_ms(send)}, per /healthz request {_cpu_ms(result['healthz'])}; "
            "CPU cores used during /send-token "
            f"{_cores(send)}, during /healthz {_cores(result['healthz'])}; "
            f"req/s: wrk {send['rps']:,.1f} + probes {send.get('probe_rps', 0.0):,.1f}; "
            f"wrk sent {send['known_sent']:,} known + "
            f"{send['unknown_sent']:,} unknown, answered {send['answered']:,} "
            f"({send['bad']} not 202{', first: ' + send['first_bad'] if send['bad'] else ''}; "
            f"errors {send['errors']}); jobs {result['job_status']}; "
            f"duplicates {delivery['duplicates']}, stray {delivery['stray']}, "
            f"without code {delivery['without_code']}; probes {delivery['probes_delivered']}/"
            f"{delivery['probes']} delivered ({delivery['probes_not_202']} not 202), answer "
            f"p50/p99 {_ms(delivery['probe_answer_s']['p50'])}/"
            f"{_ms(delivery['probe_answer_s']['p99'])}; outbox drained "
            f"{result['drain_seconds_after_load']:.1f} s after the load"
            + (
                ""
                if result["drained"] or result["spec"]["delivery"] == "none"
                else " (NOT drained within --drain-timeout)"
            )
        )
    return "\n".join(lines)


def _cpu_ms(run: dict[str, Any]) -> str:
    """resetflow's own CPU (server + worker) per answered request."""
    cores = run.get("cpu_cores", {})
    own = cores.get("server", 0.0) + cores.get("worker", 0.0)
    return f"{1000 * own / run['rps']:.2f} ms" if run["rps"] else "—"


def _cores(run: dict[str, Any]) -> str:
    system = run.get("cpu_cores_system", {})
    return ", ".join(
        f"{name} {value:.2f}" + (f" ({system[name]:.2f} sys)" if name in system else "")
        for name, value in run.get("cpu_cores", {}).items()
    )


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{1000 * value:.0f} ms"


def targets(results: list[dict[str, Any]]) -> list[tuple[str, bool | None, str]]:
    rows = [(res, row(res)) for res in results]
    out: list[tuple[str, bool | None, str]] = []
    ratios = [f"{r['store']} {r['users']:,}: {100 * r['ratio']:.0f} %" for _, r in rows]
    out.append(
        (
            f"/send-token throughput ≥ {100 * TARGET_CEILING_RATIO:.0f} % of the /healthz ceiling",
            all(r["ratio"] >= TARGET_CEILING_RATIO for _, r in rows) if rows else None,
            "; ".join(ratios),
        )
    )
    growth = []
    growth_ok: list[bool] = []
    for label in dict.fromkeys(r["store"] for _, r in rows):
        by_users = {r["users"]: r for _, r in rows if r["store"] == label}
        if 1000 in by_users and 1_000_000 in by_users:
            small, big = by_users[1000]["p99_ms"], by_users[1_000_000]["p99_ms"]
            growth_ok.append(big <= small * (1 + TARGET_P99_GROWTH))
            growth.append(f"{label}: {small:.1f} → {big:.1f} ms ({100 * (big / small - 1):+.0f} %)")
    out.append(
        (
            f"p99 at 1M users within {100 * TARGET_P99_GROWTH:.0f} % of p99 at 1k users",
            all(growth_ok) if growth_ok else None,
            "; ".join(growth) or "not measured (needs 1000 and 1000000 users)",
        )
    )
    default = [
        (res, r)
        for res, r in rows
        if res["spec"]["store"] == "sqlite"
        and r["users"] == 100_000
        and res["spec"]["workers"] == 1
        and res["spec"]["delivery"] == "inprocess"
    ]
    out.append(
        (
            f"≥ {TARGET_RPS:,.0f} /send-token req/s at 100k users on the embedded default, "
            "every message delivered",
            all(r["rps"] >= TARGET_RPS and r["complete"] for _, r in default) if default else None,
            "; ".join(
                f"{r['store']}: {r['rps']:,.0f} req/s, {r['delivered']:,}/{r['expected']:,} "
                f"delivered" + ("" if r["complete"] else " (incomplete)")
                for _, r in default
            )
            or "not measured",
        )
    )
    out.append(
        (
            f"delivery p99 under that load < {TARGET_DELIVERY_P99_S:.0f} s",
            all(
                r["delivery_p99_s"] is not None and r["delivery_p99_s"] < TARGET_DELIVERY_P99_S
                for _, r in default
            )
            if default
            else None,
            "; ".join(f"{r['store']}: {_s(r['delivery_p99_s'])}" for _, r in default)
            or "not measured",
        )
    )
    return out


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                model = text.split(":", 1)[1].strip()
                break
    import resetflow

    source = Path(resetflow.__file__).resolve().parent
    git = shutil.which("git") or "/usr/bin/git"
    head = subprocess.run(  # noqa: S603 (read-only git)
        [git, "-C", str(source), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(  # noqa: S603 (read-only git)
        [git, "-C", str(source), "status", "--porcelain", "--", "."],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "resetflow_source": str(source),
        "git_head": (head + (" (src/ has uncommitted changes)" if dirty else "")) or None,
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "wrk": wrk.version(),
        "platform": platform.platform(),
    }


def report(results: list[dict[str, Any]], info: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"resetflow load benchmark: {info['nproc']} CPUs ({info['cpu']}), Python "
        f"{info['python']}, {info['wrk']}; wrk -t{args.threads} -c{args.connections} "
        f"-d{args.duration}s per run; resetflow from {info['resetflow_source']}"
        + (f" at {info['git_head']}" if info.get("git_head") else ""),
        "",
        table(results),
        "",
        details(results),
        "",
        "Targets:",
    ]
    for name, met, detail in targets(results):
        verdict = "not measured" if met is None else ("met" if met else "NOT met")
        lines.append(f"- {name}: {verdict} ({detail})")
    for result in results:
        for name, profile in result.get("profile", {}).items():
            lines += [
                "",
                f"Profile {name}: {profile['busy_samples']} busy samples "
                f"({profile['busy_threads']:.2f} threads busy on average; "
                f"{profile['idle_samples']} waiting samples dropped); busy samples by bucket:",
            ]
            lines += [f"  {share:5.1f} %  {bucket}" for bucket, share in profile["buckets"]]
            lines.append("  top self time:")
            lines += [f"  {share:5.1f} %  {fn}" for fn, share in profile["self"]]
            lines.append("  top resetflow functions (inclusive):")
            lines += [f"  {share:5.1f} %  {fn}" for fn, share in profile["inclusive_resetflow"]]
    return "\n".join(lines)

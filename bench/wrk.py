"""wrk, the load generator: a Lua script that sends a constant GET, or a POST with its
own address from a list per request, counts what it sent and what was answered, and
prints one JSON line at the end."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench.common import BenchError

# Lua arguments: ``get PATH`` (expects 200), or ``list FILE PATH FORMAT STATUS [FIELDS
# COOKIE]``: a POST to PATH per request with an address from FILE (lines "K addr" for
# known, "U addr" for unknown), the body JSON ({"email": ...}) or a form (email=... and
# FIELDS, e.g. "&csrfmiddlewaretoken=..."), expecting STATUS. Each thread starts at its
# own place in the list; no cookie is sent but COOKIE when given (wrk keeps none).
SCRIPT = r"""
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  mode = args[1]
  known_sent, unknown_sent, answered, ok, bad, first_bad = 0, 0, 0, 0, 0, ""
  if mode == "list" then
    kinds, bodies = {}, {}
    for line in io.lines(args[2]) do
      kinds[#kinds + 1] = line:sub(1, 1)
      if args[4] == "form" then
        local address = line:sub(3):gsub("@", "%%40")
        bodies[#bodies + 1] = "email=" .. address .. (args[6] or "")
      else
        bodies[#bodies + 1] = '{"email":"' .. line:sub(3) .. '"}'
      end
    end
    n = #bodies
    pos = (tid * 7919) % n
    path = args[3]
    expected = tonumber(args[5])
    local kind = "application/json"
    if args[4] == "form" then
      kind = "application/x-www-form-urlencoded"
    end
    headers = { ["Content-Type"] = kind }
    if args[7] and args[7] ~= "" then
      headers["Cookie"] = args[7]
    end
  else
    expected = 200
    fixed = wrk.format("GET", args[2])
  end
end

function request()
  if mode ~= "list" then
    return fixed
  end
  pos = pos % n + 1
  if kinds[pos] == "K" then
    known_sent = known_sent + 1
  else
    unknown_sent = unknown_sent + 1
  end
  return wrk.format("POST", path, headers, bodies[pos])
end

function response(status, headers, body)
  answered = answered + 1
  if status == expected then
    ok = ok + 1
  else
    bad = bad + 1
    if first_bad == "" then
      first_bad = status .. " " .. string.sub(body or "", 1, 200)
    end
  end
end

function done(summary, latency, requests)
  local k, u, a, o, b, fb = 0, 0, 0, 0, 0, ""
  for _, t in ipairs(threads) do
    k = k + t:get("known_sent")
    u = u + t:get("unknown_sent")
    a = a + t:get("answered")
    o = o + t:get("ok")
    b = b + t:get("bad")
    if fb == "" then
      fb = t:get("first_bad")
    end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"errors":{"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d},"latency_us":{"p50":%d,"p90":%d,"p99":%d,' ..
    '"max":%d,"mean":%.1f},"known_sent":%d,"unknown_sent":%d,"answered":%d,"ok":%d,' ..
    '"bad":%d,"first_bad":%q}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean, k, u, a, o, b, fb))
end
"""


def preflight() -> None:
    if shutil.which("wrk") is None:
        raise BenchError(
            "wrk is missing. It generates the load (HTTP/1.1 keep-alive, a Lua script for the "
            "JSON bodies). Install it from Debian: `apt-get install -y wrk` (as root), then "
            "run `make bench` again."
        )
    try:
        import aiosmtpd  # noqa: F401
    except ImportError:
        raise BenchError(
            "aiosmtpd is missing (the SMTP sink): .venv/bin/pip install -e '.[bench]'"
        ) from None


def write_script(directory: Path) -> Path:
    script = directory / "bench.lua"
    script.write_text(SCRIPT)
    return script


def write_list(path: Path, known: list[str], unknown: list[str], rng: Any) -> Path:
    """wrk's address list: known and unknown addresses, shuffled."""
    lines = [f"K {a}" for a in known] + [f"U {a}" for a in unknown]
    rng.shuffle(lines)
    path.write_text("\n".join(lines) + "\n")
    return path


def get_args(path: str = "/healthz") -> list[str]:
    return ["get", path]


def list_args(
    listing: Path,
    path: str,
    body: str = "json",
    status: int = 202,
    *,
    fields: str = "",
    cookie: str = "",
) -> list[str]:
    return ["list", str(listing), path, body, str(status), fields, cookie]


def version() -> str:
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)  # noqa: S607
    out = done.stdout + done.stderr
    return out.splitlines()[0] if out else ""


def run(
    base_url: str,
    script: Path,
    lua_args: list[str],
    *,
    threads: int,
    connections: int,
    duration: int,
) -> dict[str, Any]:
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        "30s",
        "-s",
        str(script),
        base_url,
        "--",
        *lua_args,
    ]
    done = subprocess.run(  # noqa: S603 (wrk on loopback, no shell)
        argv, capture_output=True, text=True, timeout=duration + 90, check=False
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["argv"] = " ".join(argv)
    return result

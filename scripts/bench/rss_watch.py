#!/usr/bin/env python3
"""Run a command and sample its anonymous resident memory from outside.

Reads /proc/PID/status (RssAnon, RssFile) every --interval seconds (default 0.02 = 20 ms) until
the command exits, then prints one JSON line: exit code, samples, peak RssAnon and peak RssFile
in bytes, wall time. With --budget SIZE it also says whether the peak stayed within it.

    python3 scripts/bench/rss_watch.py [--interval 0.02] [--budget 160M] [--json OUT] -- CMD ARGS...

The command's own stdout/stderr pass through. Only the command's process is sampled (edgetune
is one process; its threads share the address space).
"""
import argparse
import json
import subprocess
import sys
import time


def parse_size(s):
    units = {"": 0, "b": 0, "k": 10, "kb": 10, "kib": 10, "m": 20, "mb": 20, "mib": 20,
             "g": 30, "gb": 30, "gib": 30}
    s = s.strip()
    i = len(s)
    while i > 0 and not (s[i - 1].isdigit() or s[i - 1] == "."):
        i -= 1
    return int(round(float(s[:i]) * (1 << units[s[i:].strip().lower()])))


def sample(pid):
    """(RssAnon, RssFile) in bytes, or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    vals = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            vals[key] = int(rest.split()[0]) * 1024
    if "RssAnon" not in vals:  # a zombie has no memory lines
        return None
    return vals["RssAnon"], vals.get("RssFile", 0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--interval", type=float, default=0.02)
    ap.add_argument("--budget", default=None)
    ap.add_argument("--json", default=None, help="also write the result to this file")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    if not cmd:
        ap.error("no command given")
    start = time.monotonic()
    proc = subprocess.Popen(cmd)
    peak_anon = peak_file = n = 0
    while proc.poll() is None:
        s = sample(proc.pid)
        if s is not None:
            n += 1
            peak_anon = max(peak_anon, s[0])
            peak_file = max(peak_file, s[1])
        time.sleep(a.interval)
    out = {
        "exit_code": proc.returncode,
        "samples": n,
        "interval_s": a.interval,
        "peak_rss_anon_bytes": peak_anon,
        "peak_rss_anon_mib": round(peak_anon / 2**20, 2),
        "peak_rss_file_mib": round(peak_file / 2**20, 2),
        "wall_s": round(time.monotonic() - start, 3),
    }
    if a.budget:
        out["budget_bytes"] = parse_size(a.budget)
        out["within_budget"] = peak_anon <= out["budget_bytes"]
    line = json.dumps(out)
    print(line)
    if a.json:
        with open(a.json, "w") as f:
            f.write(line + "\n")
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()

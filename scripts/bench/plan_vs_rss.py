#!/usr/bin/env python3
"""Compare the memory plan with the measured peak anonymous RSS, over several run shapes.

For each configuration it runs `edgetune train ... --memory-budget B` (a few steps), samples
RssAnon of the process every 20 ms from outside (rss_watch.sample), and reads the plan the run
prints before step 0. Prints one line per configuration: plan total, measured peak, their
difference, and the decisions, then a JSON summary (--json OUT to keep it).

    python3 scripts/bench/plan_vs_rss.py --bin target/release/edgetune --model M.gguf --data D.txt
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rss_watch import sample  # noqa: E402

CONFIGS = [
    # name, extra flags
    ("seq256 budget160M (auto)", ["--seq-len", "256", "--memory-budget", "160M"]),
    ("seq256 ckpt off", ["--seq-len", "256", "--checkpointing", "off", "--memory-budget", "1G"]),
    ("seq128 ckpt off 1 thread", ["--seq-len", "128", "--checkpointing", "off", "--threads", "1",
                                 "--memory-budget", "1G"]),
    ("seq256 paged-8bit 100M", ["--seq-len", "256", "--optimizer-state", "paged-8bit",
                               "--memory-budget", "100M"]),
    ("seq512 batch2 ckpt on", ["--seq-len", "512", "--batch-size", "2", "--checkpointing", "on",
                              "--memory-budget", "1G"]),
]


def run(cmd, interval=0.02):
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    err = []
    import threading
    t = threading.Thread(target=lambda: err.extend(proc.stderr))
    t.start()
    peak = 0
    while proc.poll() is None:
        s = sample(proc.pid)
        if s:
            peak = max(peak, s[0])
        time.sleep(interval)
    t.join()
    return proc.returncode, "".join(err), peak, time.monotonic() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", default="3")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    rows = []
    for name, extra in CONFIGS:
        with tempfile.TemporaryDirectory() as out:
            cmd = [a.bin, "train", a.model, "--data", a.data, "-o", out, "--targets",
                   "all-linear", "--rank", "8", "--steps", a.steps] + extra
            rc, err, peak, wall = run(cmd)
        m = re.search(r"^\s+total\s+\S+ \S+\s+(\d+)", err, re.M)
        base = re.search(r"runtime \+ model \+ tokenizer\s+\S+ \S+\s+(\d+)", err)
        dec = re.search(r"^decisions: (.*)$", err, re.M)
        planned = int(m.group(1)) if m else None
        row = {"config": name, "exit_code": rc, "plan_bytes": planned,
               "baseline_bytes": int(base.group(1)) if base else None,
               "peak_rss_anon_bytes": peak, "wall_s": round(wall, 1),
               "decisions": dec.group(1) if dec else None}
        rows.append(row)
        mib = lambda b: f"{b / 2**20:7.1f}" if b is not None else "      -"
        diff = (planned - peak) / 2**20 if planned else float("nan")
        print(f"{name:28s} plan {mib(planned)} MiB  measured {mib(peak)} MiB  "
              f"plan-measured {diff:+6.1f} MiB  rc {rc}  {row['decisions']}", flush=True)
        if rc != 0:
            print(err[-2000:], file=sys.stderr)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

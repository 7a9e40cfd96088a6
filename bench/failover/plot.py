#!/usr/bin/python3
"""Plot write availability through a node-crash failover, pgbaton vs Patroni + HAProxy.

Reads the JSON written by `pgbaton-bench compare --json FILE` and draws, for each tool at
its default settings (pgbaton: defaults 4/1/1.5; Patroni: 30/10/10, the seed's, with the
seed's HAProxy checks) and at its fastest settings, the node-crash run whose window is the
median: acknowledged writes per 100 ms bucket against time since the crash.

usage: plot.py RESULTS.json OUTPUT.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SERIES = [
    ("pgbaton", "default", "pgbaton, defaults (ttl 4 / loop_wait 1), direct to members", "tab:blue", "-"),
    ("pgbaton", "fast", "pgbaton, fast (ttl 2 / loop_wait 0.5)", "tab:cyan", "--"),
    ("patroni", "seed", "Patroni 3.0.2 + HAProxy, seed (ttl 30 / loop_wait 10, checks 3s×3)", "tab:red", "-"),
    ("patroni", "ttl5", "Patroni 3.0.2 + HAProxy, tuned (ttl 5 / loop_wait 1, checks 1s×2)", "tab:orange", "--"),
]
BUCKET = 0.1


def median_run(runs):
    runs = sorted((r for r in runs if r.get("gap_s") is not None), key=lambda r: r["gap_s"])
    return runs[(len(runs) - 1) // 2] if runs else None


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        data = json.load(f)
    fig, axes = plt.subplots(len(SERIES), 1, figsize=(11, 9), sharex=True)
    t_min, t_max = -3.0, 45.0
    for ax, (system, profile, label, color, style) in zip(axes, SERIES):
        runs = [r for r in data["runs"] if r["system"] == system and r["profile"] == profile and r["crash"] == "node"]
        run = median_run(runs)
        ax.set_ylim(0, 3)
        ax.set_ylabel("writes /\n100 ms")
        ax.axvline(0, color="black", linewidth=0.8)
        if run is None:
            ax.text(0.5, 0.5, f"{label}: no run", transform=ax.transAxes, ha="center")
            continue
        n = int((t_max - t_min) / BUCKET)
        counts = [0] * n
        for t in run.get("acks_rel_s", []):
            i = int((t - t_min) / BUCKET)
            if 0 <= i < n:
                counts[i] += 1
        xs = [t_min + i * BUCKET for i in range(n)]
        ax.step(xs, counts, where="post", color=color, linestyle=style)
        ax.fill_between(xs, counts, step="post", color=color, alpha=0.25)
        last = max(run.get("acks_rel_s", [t_min]))
        ax.set_title(f"{label}: window {run['gap_s']:.2f} s (median of {len(runs)} runs)", fontsize=9, loc="left")
        if last < t_max:
            ax.axvspan(last, t_max, color="grey", alpha=0.1)
    axes[-1].set_xlabel("seconds since SIGKILL of the leader's agent and PostgreSQL (grey: client stopped)")
    axes[-1].set_xlim(t_min, t_max)
    fig.suptitle("Write availability through a node crash (client writes every 50 ms)")
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=100)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The table of bench/compare_cpu.sh from its values.tsv.

values.tsv: `workload, unit, round, side (dapo|peer), value` a line. Per workload: the median of
dapo's values over the rounds, the median of the peer's, and the median of the per-round
ratios dapo/peer (each round's dapo and peer ran back to back, so a pair shares the machine's
state; with one round it is just that round's ratio), then every round's ratio, to show the
spread. Below 1: dapo takes less time (or memory) than the peer.

Usage: python3 bench/peers/summarize.py values.tsv [durations.tsv]
"""

import statistics
import sys


def fmt(x, unit):
    if unit == "MiB":
        return f"{x:.0f} MiB"
    return f"{x:.4f} s" if x < 1 else f"{x:.3f} s"


def main():
    rows = {}  # workload -> (unit, {round: {side: value}}), in order of first appearance
    with open(sys.argv[1]) as f:
        for line in f:
            workload, unit, rnd, side, value = line.rstrip("\n").split("\t")
            rows.setdefault(workload, (unit, {}))[1].setdefault(int(rnd), {})[side] = float(value)
    table = []
    for workload, (unit, rounds) in rows.items():
        pairs = [(v["dapo"], v["peer"]) for _, v in sorted(rounds.items()) if "dapo" in v and "peer" in v]
        if not pairs:
            continue
        d = statistics.median(p[0] for p in pairs)
        p = statistics.median(p[1] for p in pairs)
        ratios = [a / b for a, b in pairs]
        table.append((workload, fmt(d, unit), fmt(p, unit), f"{statistics.median(ratios):.2f}",
                      " ".join(f"{r:.2f}" for r in ratios)))
    head = ("workload", "dapo", "peer", "dapo/peer", "per-round dapo/peer")
    widths = [max(len(r[i]) for r in table + [head]) for i in range(len(head))]
    line = lambda r: " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    n = max(len(rounds) for _, rounds in rows.values())
    print(f"workload | dapo | peer | dapo time / peer time  (medians over {n} interleaved round(s); "
          f"the ratio is the median of the per-round paired ratios; RSS rows: dapo MiB / peer MiB)")
    print(line(head))
    print("-+-".join("-" * w for w in widths))
    for r in table:
        print(line(r))
    if len(sys.argv) > 2:
        with open(sys.argv[2]) as f:
            took = [line.rstrip("\n").split("\t") for line in f if line.strip()]
        print("\nwall time per workload (all rounds, both sides, process start-up included): "
              + ", ".join(f"{w} {int(s) // 60}:{int(s) % 60:02d}" for w, s in took))


if __name__ == "__main__":
    main()

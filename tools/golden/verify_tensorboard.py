#!/usr/bin/env python3
"""Checks that TensorBoard itself reads the event files src/report/tensorboard.rs writes.

Usage
-----
    verify_tensorboard.py EVENT_DIR_OR_FILE [--expect EXPECT.json] [--rel-tol 0]

Two passes, both through the ``tensorboard`` package's own code (no TensorFlow needed; the
package falls back to its pure-Python record reader):

1. Strict: every event file (the file given, or every ``*tfevents*`` file of the directory
   in name order) is read record by record with TensorBoard's record reader, which checks
   the masked CRC32C of each length and each payload, and every payload is parsed with
   TensorBoard's ``Event`` protobuf class. Any CRC failure, truncation or parse error exits
   1. (This pass exists because TensorBoard's loaders stop quietly at a bad record: they
   may be reading a file that is still being written.)
2. What TensorBoard shows: an ``EventAccumulator`` (the loader behind ``tensorboard
   --load_fast=false``) loads the path with no sampling limit, applying its
   ``SessionLog.START`` purge across files; every scalar tag is printed as
   ``step wall_time value``.

``--expect`` names a JSON file ``{tag: [[step, wall_time, value], ...]}`` (as written by
``tests/report_writers.rs`` with ``DAPO_KEEP_TB=<dir>``): the tags, steps and wall times
must match exactly and the values within ``--rel-tol`` (default 0: exact, since both sides
hold the same f32; NaN matches NaN). Exit status 0 when everything matches.

Requirements: ``pip install -r tools/golden/requirements-tensorboard.txt``.
"""

import argparse
import json
import math
import os
import sys

from tensorboard.backend.event_processing import event_accumulator
from tensorboard.compat import tf
from tensorboard.compat.proto import event_pb2


def event_files(path):
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if "tfevents" in n)
        return [os.path.join(path, n) for n in names]
    return [path]


def strict_pass(path):
    """Reads every record with TensorBoard's CRC-checking reader; returns False on any error."""
    files = event_files(path)
    if not files:
        print(f"FAIL: no event files in {path}")
        return False
    ok = True
    for f in files:
        reader = tf.pywrap_tensorflow.PyRecordReader_New(f.encode(), 0, None, None)
        kinds = {}
        n = 0
        try:
            while True:
                try:
                    reader.GetNext()
                except tf.errors.OutOfRangeError:
                    break
                event = event_pb2.Event.FromString(reader.record())
                kind = event.WhichOneof("what")
                kinds[kind] = kinds.get(kind, 0) + 1
                if n == 0 and kind != "file_version":
                    print(f"FAIL: {f}: the first event is {kind}, not file_version")
                    ok = False
                if kind == "file_version":
                    print(f"  {os.path.basename(f)}: file_version {event.file_version!r}")
                elif kind == "session_log":
                    status = event_pb2.SessionLog.SessionStatus.Name(event.session_log.status)
                    print(f"  {os.path.basename(f)}: session_log {status} at step {event.step}")
                n += 1
        except tf.errors.DataLossError as e:
            print(f"FAIL: {f}: record {n}: {e}")
            ok = False
            continue
        except Exception as e:  # a payload TensorBoard's protobuf class cannot parse
            print(f"FAIL: {f}: record {n}: {type(e).__name__}: {e}")
            ok = False
            continue
        print(f"  {os.path.basename(f)}: {n} records, CRCs ok, events by kind {kinds}")
    return ok


def load_scalars(path):
    acc = event_accumulator.EventAccumulator(path, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.wall_time, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def same_value(got, want, rel_tol):
    if math.isnan(want):
        return math.isnan(got)
    return got == want or abs(got - want) <= rel_tol * max(1.0, abs(want))


def compare(scalars, expect, rel_tol):
    problems = []
    if sorted(scalars) != sorted(expect):
        problems.append(f"tags: got {sorted(scalars)}, expected {sorted(expect)}")
    for tag, want in sorted(expect.items()):
        got = scalars.get(tag, [])
        if [s for s, _, _ in got] != [s for s, _, _ in want]:
            problems.append(f"{tag}: steps {[s for s, _, _ in got]}, expected {[s for s, _, _ in want]}")
            continue
        for (step, gw, gv), (_, ww, wv) in zip(got, want):
            if gw != ww:
                problems.append(f"{tag} step {step}: wall_time {gw!r}, expected {ww!r}")
            if not same_value(gv, float(wv), rel_tol):
                problems.append(f"{tag} step {step}: value {gv!r}, expected {wv!r}")
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path", help="an event file, or a directory of them")
    ap.add_argument("--expect", help="JSON {tag: [[step, wall_time, value], ...]} to assert")
    ap.add_argument("--rel-tol", type=float, default=0.0, help="relative tolerance on values")
    a = ap.parse_args()

    import tensorboard

    print(f"tensorboard {tensorboard.__version__} (record reader: tf {tf.__version__})")
    print("strict pass (TensorBoard's record reader, Event protobuf):")
    ok = strict_pass(a.path)

    scalars = load_scalars(a.path)
    print("EventAccumulator scalars (step wall_time value):")
    for tag in sorted(scalars):
        print(f"  {tag}")
        for step, wall, value in scalars[tag]:
            print(f"    {step:>6} {wall:.6f} {value!r}")

    if a.expect:
        with open(a.expect) as f:
            expect = json.load(f)
        problems = compare(scalars, expect, a.rel_tol)
        for p in problems:
            print(f"FAIL: {p}")
        n = sum(len(v) for v in expect.values())
        if not problems:
            print(f"expect: all {n} values of {len(expect)} tags match")
        ok = ok and not problems
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Checks the installed peer packages against bench/requirements.txt.

Prints one line `name==version ...` of what is installed (for the results header) and exits 0
when every pin matches; otherwise says which differ and how to install the pinned ones, and
exits 1. torch's local build tag (`+cpu`, `+cu132`) is ignored: the version is what is pinned.

Usage: python3 bench/peers/versions.py bench/requirements.txt
"""

import importlib.metadata
import sys


def pins(path):
    """`name==version` lines of a requirements file, as {name: version}."""
    out = {}
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                name, _, version = line.partition("==")
                out[name.strip()] = version.strip()
    return out


def main():
    path = sys.argv[1]
    want = pins(path)
    got, bad = {}, []
    for name, version in want.items():
        try:
            have = importlib.metadata.version(name).split("+")[0]
        except importlib.metadata.PackageNotFoundError:
            have = "missing"
        got[name] = have
        if have != version:
            bad.append(f"{name} {have} (pinned {version})")
    if bad:
        sys.exit(f"error: {sys.executable} has {', '.join(bad)}.\n"
                 f"Install the pinned peers (pip install -r {path}) or point PYTHON at an environment "
                 f"that has them, e.g. PYTHON=/path/to/venv/bin/python bench/compare_cpu.sh")
    print(" ".join(f"{k}=={v}" for k, v in got.items()) + f"  (python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A second reward source beside the built-in math scorer: `shortness` = 1 / (1 + characters of
the completion), a metric name no other source uses."""
import json
import sys

for line in sys.stdin:
    req = json.loads(line)
    print(json.dumps({"shortness": 1.0 / (1.0 + len(req["completion"]))}), flush=True)

#!/usr/bin/env python3
"""Answers like good.py but stops responding forever on the completion "hang"."""
import json
import os
import sys
import time

for line in sys.stdin:
    req = json.loads(line)
    if req["completion"] == "hang":
        print("hang.py: stuck", file=sys.stderr, flush=True)
        time.sleep(3600)
    print(json.dumps({"correctness": 1.0, "pid": os.getpid()}), flush=True)

"""Run loader calls on hostile files in a worker subprocess, so that a segfault or
a hang fails one case instead of killing the test run (issue 17).

A case is ``(name, code, expected, pattern)``: ``code`` is Python run in the worker
(``facegeom`` imported, the corpus folder in ``folder``); the call must raise an
exception whose class (or a base class) is named in ``expected`` with a message
matching ``pattern``, within ``CASE_SECONDS``. One worker runs the cases in turn
and logs each start and end; when it dies or hangs, the case it was running is
reported as crashed / hung and a fresh worker goes on with the rest.
"""
import json
import os
import subprocess
import sys
import time

CASE_SECONDS = 15.0
WORKER_TIMEOUT = 600.0

WORKER = r'''
import json, pickle, re, sys, time, traceback
import numpy as np
import facegeom
from facegeom.models import FLAME, BFM, _pickle
from facegeom.models.flame import load_flame_masks
from facegeom.eval import io
cases, folder, log = json.load(open(sys.argv[1])), sys.argv[2], open(sys.argv[3], "a", buffering=1)
for name, code in cases:
    log.write(json.dumps({"start": name}) + "\n"); log.flush()
    tic = time.perf_counter()
    try:
        exec(code, {"folder": folder, "np": np, "pickle": pickle, "FLAME": FLAME, "BFM": BFM, "_pickle": _pickle,
                    "load_flame_masks": load_flame_masks, "io": io})
        result = {"raised": None}
    except BaseException as error:
        result = {"raised": [c.__name__ for c in type(error).__mro__], "message": str(error)[:2000]}
    result.update(end=name, seconds=time.perf_counter() - tic)
    log.write(json.dumps(result) + "\n"); log.flush()
'''


def run_cases(cases, folder, workdir):
    """Run ``cases`` (list of (name, code, expected, pattern)); return {name: outcome dict}."""
    pending = [(name, code) for name, code, _, _ in cases]
    outcomes = {}
    attempt = 0
    while pending:
        attempt += 1
        spec = os.path.join(workdir, f"cases{attempt}.json")
        log = os.path.join(workdir, f"log{attempt}.jsonl")
        with open(spec, "w") as f:
            json.dump(pending, f)
        try:
            proc = subprocess.run([sys.executable, "-c", WORKER, spec, str(folder), log], capture_output=True,
                                  text=True, timeout=WORKER_TIMEOUT, cwd=os.getcwd(),
                                  env=dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep
                                           + os.environ.get("PYTHONPATH", "")))
            died = proc.returncode != 0
            stderr = proc.stderr[-2000:]
        except subprocess.TimeoutExpired:
            died, stderr = True, "worker timed out"
        started = None
        if os.path.exists(log):
            with open(log) as f:
                for line in f:
                    entry = json.loads(line)
                    if "start" in entry:
                        started = entry["start"]
                    else:
                        outcomes[entry["end"]] = entry
                        started = None
        done = set(outcomes)
        if died:
            if started is None:  # died before the first case or between cases: give up on the rest
                for name, _ in pending:
                    outcomes.setdefault(name, {"crashed": stderr})
                break
            outcomes[started] = {"crashed": stderr}
            done.add(started)
        pending = [(n, c) for n, c in pending if n not in done]
    return outcomes


def failures(cases, outcomes):
    """Human-readable list of cases whose outcome is not the expected exception."""
    import re

    bad = []
    for name, _, expected, pattern in cases:
        outcome = outcomes.get(name, {"crashed": "never ran"})
        if "crashed" in outcome:
            bad.append(f"{name}: the worker crashed or hung ({outcome['crashed'][-300:]})")
        elif outcome["raised"] is None:
            bad.append(f"{name}: no exception (expected {expected})")
        elif not set(expected) <= set(outcome["raised"]):
            bad.append(f"{name}: raised {outcome['raised'][0]} ({outcome['message'][:300]}), expected {expected}")
        elif not re.search(pattern, outcome["message"]):
            bad.append(f"{name}: message {outcome['message'][:300]!r} does not match {pattern!r}")
        elif outcome["seconds"] > CASE_SECONDS:
            bad.append(f"{name}: took {outcome['seconds']:.1f} s (> {CASE_SECONDS} s)")
    return bad

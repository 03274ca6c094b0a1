"""pytest plugin for compat-tests/run: writes one JSON line per event to the file descriptor in
$COMPAT_EVENTS_FD (collected, start, result, collect_error), so that the runner can show live
progress and draw the matrix. Loaded with `-p compat_events`; does nothing without the variable.
"""
import json
import os
import re

import pytest

_out = None
_state = {}


def _emit(**event):
    if _out is not None:
        _out.write(json.dumps(event) + "\n")
        _out.flush()


def _reason(report) -> str:
    if report.skipped and getattr(report, "wasxfail", None):  # an expected failure: say why
        return _clean("expected failure (xfail): " + report.wasxfail)
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # a skip: (path, line, message)
        text = str(longrepr[2])
        return text[len("Skipped: "):] if text.startswith("Skipped: ") else text
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        text = crash.message
    else:
        text = str(longrepr or "").strip().splitlines()[-1:] or [""]
        text = text[0]
    return _clean(text)


def _clean(text) -> str:
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", text).split())  # no terminal colours
    return text[:400] + ("…" if len(text) > 400 else "")


def pytest_configure(config):
    global _out
    fd = os.environ.get("COMPAT_EVENTS_FD")
    if fd and _out is None:
        _out = os.fdopen(int(fd), "w", buffering=1)


def pytest_collectreport(report):
    if report.failed:
        _emit(event="collect_error", nodeid=report.nodeid, reason=_reason(report))


def pytest_collection_finish(session):
    _emit(event="collected", total=len(session.items),
          nodeids=[item.nodeid for item in session.items])


def pytest_runtest_logstart(nodeid, location):
    _state[nodeid] = {"outcome": None, "reason": "", "duration": 0.0}
    _emit(event="start", nodeid=nodeid)


def pytest_runtest_logreport(report):
    st = _state.setdefault(report.nodeid, {"outcome": None, "reason": "", "duration": 0.0})
    st["duration"] += report.duration
    if report.when in ("setup", "call"):
        if report.skipped:
            st["outcome"], st["reason"] = "skipped", _reason(report)
        elif report.failed:
            phase = "setup: " if report.when == "setup" else ""
            st["outcome"], st["reason"] = "failed", phase + _reason(report)
        elif report.when == "call":
            st["outcome"] = "passed"
    elif report.failed and st["outcome"] != "failed":  # teardown
        st["outcome"], st["reason"] = "failed", "teardown: " + _reason(report)


def pytest_runtest_logfinish(nodeid, location):
    st = _state.pop(nodeid, {"outcome": None, "reason": "", "duration": 0.0})
    _emit(event="result", nodeid=nodeid, outcome=st["outcome"] or "failed",
          reason=st["reason"] or ("" if st["outcome"] else "no outcome reported"),
          duration=round(st["duration"], 3))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    global _out
    if _out is not None:
        _out.close()
        _out = None

"""compat-tests/run: runs this suite against a target and draws the compatibility matrix
(rows: behaviours, columns: client libraries; the mapping is matrix.py).

Targets:
  (default)            a Switchboard started per test from $SB_TEST_BIN (target/debug/switchboard)
  --kafka/--mqtt/--amqp HOST:PORT
                       brokers already running, of any vendor; only those protocols are run
  --reference          the suite against Switchboard, then the MQTT and AMQP cases against
                       Debian's mosquitto and rabbitmq-server; cells show both results

Writes target/compat/matrix.md, target/compat/matrix.html, target/compat/results-<run>.json and
the pytest output of each run to target/compat/pytest-<run>.log; with --reference --write-docs
also docs/compatibility.md. The last line printed is `N passed, N failed, N skipped`.
"""
import argparse
import datetime
import html
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import matrix  # noqa: E402

PROTOCOLS = ("kafka", "mqtt", "amqp")
REFERENCE_NAMES = {"mqtt": "mosquitto", "amqp": "RabbitMQ"}


# ----------------------------------------------------------------------------------------------
# Running pytest


class Run:
    """One pytest run against one target."""

    def __init__(self, label, title, files, args):
        self.label = label  # switchboard / reference / external
        self.title = title
        self.files = files
        self.args = args
        self.total = 0
        self.results = {}  # nodeid -> {outcome, reason, duration}
        self.collected = []
        self.returncode = None
        self.log_path = None
        self.seconds = 0.0

    def counts(self):
        c = {"passed": 0, "failed": 0, "skipped": 0}
        for r in self.results.values():
            c[r["outcome"]] = c.get(r["outcome"], 0) + 1
        return c


class Progress:
    """One status line, rewritten in place with \\r."""

    def __init__(self, stream=sys.stdout):
        self.stream = stream
        self.tty = stream.isatty()
        self.last = 0.0
        self.width = 0

    def show(self, text, force=False):
        now = time.monotonic()
        if not force and now - self.last < (0.1 if self.tty else 2.0):
            return
        self.last = now
        cols = shutil.get_terminal_size((120, 20)).columns - 1
        text = text[:cols]
        pad = max(0, self.width - len(text))
        self.width = len(text)
        self.stream.write("\r" + text + (" " * pad if not self.tty else "\x1b[K"))
        self.stream.flush()

    def done(self):
        self.stream.write("\n")
        self.stream.flush()
        self.width = 0


def run_pytest(run, out_dir, extra, progress):
    run.log_path = out_dir / f"pytest-{run.label}.log"
    read_fd, write_fd = os.pipe()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    env["COMPAT_EVENTS_FD"] = str(write_fd)
    env.setdefault("SB_TEST_BIN", str(ROOT / "target" / "debug" / "switchboard"))
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "compat_events",
           *[str(HERE / f) for f in run.files], *run.args, *extra]
    began = time.monotonic()
    with open(run.log_path, "wb") as log:
        log.write(("$ " + " ".join(cmd) + "\n").encode())
        log.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, pass_fds=(write_fd,))
    os.close(write_fd)
    current = ""
    c = {"passed": 0, "failed": 0, "skipped": 0}

    def line(force=False):
        done = sum(c.values())
        progress.show(f"[{run.label}] {done}/{run.total or '?'}  {c['passed']} passed, "
                      f"{c['failed']} failed, {c['skipped']} skipped  {current}", force)

    try:
        with os.fdopen(read_fd, "r", encoding="utf-8", errors="replace") as events:
            line(force=True)
            for raw in events:
                try:
                    ev = json.loads(raw)
                except ValueError:
                    continue
                kind = ev.get("event")
                if kind == "collected":
                    run.total = ev["total"]
                    run.collected = ev["nodeids"]
                elif kind == "start":
                    current = matrix._short(ev["nodeid"])
                elif kind in ("result", "collect_error"):
                    outcome = ev.get("outcome", "failed")
                    run.results[ev["nodeid"]] = {"outcome": outcome, "reason": ev["reason"],
                                                 "duration": ev.get("duration", 0.0)}
                    c[outcome] = c.get(outcome, 0) + 1
                    if kind == "collect_error":
                        run.total += 1
                line(force=kind == "collected")
        run.returncode = proc.wait()
    except KeyboardInterrupt:
        try:
            run.returncode = proc.wait(timeout=60)  # pytest got the SIGINT too: let it clean up
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        progress.done()
        raise
    current = ""
    run.seconds = time.monotonic() - began
    # Collected but never reported: pytest stopped early.
    for nodeid in run.collected:
        if nodeid not in run.results:
            run.results[nodeid] = {"outcome": "failed", "duration": 0.0,
                                   "reason": f"not run: pytest exited with {run.returncode} "
                                             f"(see {rel(run.log_path)})"}
    if run.returncode not in (0, 1, 5) and not run.results:
        run.results[f"pytest ({run.label})"] = {
            "outcome": "failed", "duration": 0.0,
            "reason": f"pytest exited with {run.returncode} before running anything "
                      f"(see {rel(run.log_path)})"}
    c = run.counts()
    line(force=True)
    progress.done()


def rel(path):
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


# ----------------------------------------------------------------------------------------------
# The matrix


class Cell:
    def __init__(self):
        self.tests = []  # (nodeid, outcome, reason)

    def add(self, nodeid, result):
        self.tests.append((nodeid, result["outcome"], result["reason"]))

    @property
    def passed(self):
        return sum(o == "passed" for _, o, _ in self.tests)

    @property
    def failed(self):
        return sum(o == "failed" for _, o, _ in self.tests)

    @property
    def skipped(self):
        return sum(o == "skipped" for _, o, _ in self.tests)

    def status(self):
        if self.failed:
            return "fail"
        if self.passed:
            return "pass"
        if self.skipped:
            return "skip"
        return "none"

    def text(self):
        st = self.status()
        if st in ("pass", "fail"):
            ran = self.passed + self.failed
            return f"{self.passed}/{ran}" + (f" +{self.skipped} skip" if self.skipped else "")
        if st == "skip":
            return f"skip {self.skipped}" if self.skipped > 1 else "skip"
        return ""


class Matrix:
    """Cells per run label, keyed by (section, row, client)."""

    def __init__(self, runs):
        self.runs = runs
        self.cells = {run.label: {} for run in runs}
        self.unmapped = []
        for run in runs:
            for nodeid, result in run.results.items():
                section, rows, client, mapped = matrix.classify(nodeid)
                if not mapped and nodeid not in self.unmapped:
                    self.unmapped.append(nodeid)
                for row in rows:
                    self.cells[run.label].setdefault((section, row, client), Cell()).add(
                        nodeid, result)
        self.keys = {k for cells in self.cells.values() for k in cells}

    def sections(self):
        """-> [(section, [rows], [clients])] for what has any test."""
        out = []
        order = {r: i for i, (_, r) in enumerate(matrix.ROWS)}
        for section in matrix.SECTIONS + ["Other"]:
            keys = [k for k in self.keys if k[0] == section]
            if not keys:
                continue
            rows = sorted({k[1] for k in keys}, key=lambda r: order.get(r, len(order)))
            clients = sorted({k[2] for k in keys},
                             key=lambda c: matrix.CLIENTS.index(c) if c in matrix.CLIENTS else 99)
            out.append((section, rows, clients))
        return out

    def cell(self, label, section, row, client):
        c = self.cells[label].get((section, row, client))
        if c is not None:
            return c
        return None

    def na(self, row, client):
        return matrix.NA.get((row, client))


class Notes:
    """Numbered footnotes, one per distinct text."""

    def __init__(self):
        self.items = []
        self.index = {}

    def ref(self, text):
        if text not in self.index:
            self.items.append(text)
            self.index[text] = len(self.items)
        return self.index[text]


def cell_note(cell):
    """Footnote text for a cell with failures or skips, or None."""
    if cell is None:
        return None
    bad = [(n, r) for n, o, r in cell.tests if o == "failed"]
    if bad:
        return "failed: " + "; ".join(f"`{matrix._short(n)}`: {r}" for n, r in bad)
    skips = sorted({r for _, o, r in cell.tests if o == "skipped"})
    if skips:
        return "skipped: " + "; ".join(skips)
    return None


def cell_tooltip(cell, run_title):
    lines = [f"{run_title}:"]
    for n, o, r in cell.tests:
        lines.append(f"{o.upper():7} {matrix._short(n)}" + (f" — {r}" if r else ""))
    return "\n".join(lines)


SYMBOL = {"pass": "✅", "fail": "❌", "skip": "⏭️", "na": "n/a", "none": ""}


def ref_missing_reason(section):
    if section == "Kafka":
        return "no reference broker for Kafka in this suite"
    if section == "Switchboard itself":
        return "Switchboard's own binary"
    return "not run against the reference"


def markdown(m, heading, summary, generated_by):
    notes = Notes()
    out = [f"# {heading}", "", f"Generated by `{generated_by}` on "
           f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}. {summary}", ""]
    labels = [r.label for r in m.runs]
    if len(m.runs) > 1:
        out += ["Each cell: " + " · ".join(r.title for r in m.runs) + ". ✅ all ran tests passed "
                "(passed/ran), ❌ some failed, ⏭️ skipped, n/a the client cannot do this, empty: "
                "not tested.", ""]
    else:
        out += ["✅ all ran tests passed (passed/ran), ❌ some failed, ⏭️ skipped, n/a the client "
                "cannot do this, empty: not tested.", ""]
    for section, rows, clients in m.sections():
        out += [f"## {section}", ""]
        for label, run in zip(labels, m.runs):
            if not any(k[0] == section for k in m.cells[label]):
                out += [f"{run.title}: not run for this section "
                        f"({ref_missing_reason(section)}).", ""]
        out.append("| Behaviour | " + " | ".join(clients) + " |")
        out.append("|---|" + "---|" * len(clients))
        for row in rows:
            cells = []
            for client in clients:
                parts = []
                na = m.na(row, client)
                for label in labels:
                    c = m.cell(label, section, row, client)
                    if c is None or c.status() == "none":
                        parts.append(f"n/a[^{notes.ref('n/a: ' + na)}]" if na else "—")
                        continue
                    text = f"{SYMBOL[c.status()]} {c.text()}".strip()
                    note = cell_note(c)
                    if note:
                        text += f"[^{notes.ref(note)}]"
                    parts.append(text)
                cell = "" if all(p == "—" for p in parts) else " · ".join(parts)
                cells.append(cell.replace("|", "\\|"))
            out.append(f"| {row} | " + " | ".join(cells) + " |")
        out.append("")
    if m.unmapped:
        out += ["Tests that matrix.py does not map yet: " +
                ", ".join(f"`{matrix._short(n)}`" for n in m.unmapped), ""]
    if notes.items:
        out += [f"[^{i}]: {text.replace(chr(10), ' ')}" for i, text in enumerate(notes.items, 1)]
        out.append("")
    return "\n".join(out)


CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,sans-serif;margin:2em;color:#222}
h1{font-size:1.5em} h2{font-size:1.15em;margin-top:1.8em}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:center;white-space:nowrap}
th{background:#f2f2f2} td.row{text-align:left;font-weight:600}
td.pass{background:#c8ecc8} td.fail{background:#f6c1c1} td.skip{background:#f5e6a8}
td.na{background:#e4e4e4;color:#666} td.none{background:#fff}
td span.part{display:inline-block;min-width:3.5em;padding:0 .2em;border-radius:3px}
span.pass{background:#c8ecc8} span.fail{background:#f6c1c1} span.skip{background:#f5e6a8}
span.na{background:#e4e4e4;color:#666}
td[title]{cursor:help} sup a{text-decoration:none}
.legend span{display:inline-block;padding:0 .5em;margin-right:.5em;border:1px solid #ccc}
ol.notes{font-size:.9em;color:#444} ol.notes li{margin:.2em 0;word-break:break-word}
.summary{font-weight:600}
"""


def code(escaped):
    """`x` (Markdown code spans in note texts) -> <code>x</code>."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", escaped)


def html_page(m, heading, summary, generated_by):
    notes = Notes()
    e = html.escape
    labels = [r.label for r in m.runs]
    body = [f"<h1>{e(heading)}</h1>",
            f"<p>Generated by <code>{e(generated_by)}</code> on "
            f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}.</p>",
            f"<p class=summary>{e(summary)}</p>",
            "<p class=legend><span style='background:#c8ecc8'>pass</span>"
            "<span style='background:#f6c1c1'>fail</span>"
            "<span style='background:#f5e6a8'>skip</span>"
            "<span style='background:#e4e4e4'>n/a</span>"
            "<span>not tested</span> Hover a cell for its tests and reasons.</p>"]
    if len(m.runs) > 1:
        body.append("<p>Each cell: " + " · ".join(e(r.title) for r in m.runs) + ".</p>")
    for section, rows, clients in m.sections():
        body.append(f"<h2>{e(section)}</h2><table><tr><th>Behaviour</th>" +
                    "".join(f"<th>{e(c)}</th>" for c in clients) + "</tr>")
        for row in rows:
            tds = []
            for client in clients:
                na = m.na(row, client)
                parts, tips, statuses = [], [], []
                for label, run in zip(labels, m.runs):
                    c = m.cell(label, section, row, client)
                    if c is None or c.status() == "none":
                        if na:
                            n = notes.ref("n/a: " + na)
                            parts.append(("na", f"n/a<sup><a href='#n{n}'>{n}</a></sup>"))
                            tips.append(f"{run.title}: n/a — {na}")
                            statuses.append("na")
                        else:
                            parts.append(("none", "—" if len(m.runs) > 1 else ""))
                            statuses.append("none")
                        continue
                    st = c.status()
                    statuses.append(st)
                    text = e(c.text())
                    note = cell_note(c)
                    if note:
                        n = notes.ref(note)
                        text += f"<sup><a href='#n{n}'>{n}</a></sup>"
                    parts.append((st, text))
                    tips.append(cell_tooltip(c, run.title))
                real = [s for s in statuses if s != "none"]
                if len(m.runs) == 1:
                    cls = statuses[0]
                    inner = parts[0][1]
                else:
                    cls = real[0] if real and len(set(real)) == 1 else ("none" if not real else
                                                                         "mixed-parts")
                    inner = " ".join(f"<span class='part {s}'>{t}</span>" for s, t in parts)
                    if cls == "mixed-parts":
                        cls = "none"
                title = f" title='{e(chr(10).join(tips), quote=True)}'" if tips else ""
                tds.append(f"<td class={cls}{title}>{inner}</td>")
            body.append(f"<tr><td class=row>{e(row)}</td>{''.join(tds)}</tr>")
        body.append("</table>")
    if m.unmapped:
        body.append("<p>Tests that matrix.py does not map yet: " +
                    ", ".join(f"<code>{e(matrix._short(n))}</code>" for n in m.unmapped) + "</p>")
    if notes.items:
        body.append("<h2>Notes</h2><ol class=notes>" +
                    "".join(f"<li id=n{i}>{code(e(t))}</li>" for i, t in enumerate(notes.items, 1)) +
                    "</ol>")
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<title>{e(heading)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


# Terminal


class Ansi:
    def __init__(self, on):
        self.on = on

    def __call__(self, code, text):
        return f"\x1b[{code}m{text}\x1b[0m" if self.on and text else text


COLOR = {"pass": "32", "fail": "31;1", "skip": "33", "na": "2", "none": "2"}


def terminal(m, color):
    paint = Ansi(color)
    labels = [r.label for r in m.runs]
    lines = []
    if len(m.runs) > 1:
        lines.append("cells: " + " | ".join(r.title for r in m.runs))
    for section, rows, clients in m.sections():
        table = []
        for row in rows:
            cells = []
            for client in clients:
                na = m.na(row, client)
                parts = []
                for label in labels:
                    c = m.cell(label, section, row, client)
                    if c is None or c.status() == "none":
                        parts.append(("na", "n/a") if na else ("none", "·"))
                    else:
                        mark = {"pass": "✔", "fail": "✘", "skip": "-"}[c.status()]
                        parts.append((c.status(), f"{mark} {c.text()}" if c.status() != "skip"
                                      else c.text()))
                cells.append(parts)
            table.append((row, cells))
        wrow = max(len(section), *(len(r) for r, _ in table))
        widths = []
        for j, client in enumerate(clients):
            w = len(client)
            for _, cells in table:
                w = max(w, len(" | ".join(t for _, t in cells[j])))
            widths.append(w)
        lines.append("")
        lines.append(paint("1", section.ljust(wrow)) + "  " +
                     "  ".join(c.ljust(w) for c, w in zip(clients, widths)))
        for row, cells in table:
            out = row.ljust(wrow) + "  "
            for parts, w in zip(cells, widths):
                plain = " | ".join(t for _, t in parts)
                colored = " | ".join(paint(COLOR[s], t) for s, t in parts)
                out += colored + " " * (w - len(plain)) + "  "
            lines.append(out.rstrip())
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Main


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="compat-tests/run",
        description="Run the real-client compatibility suite and draw the behaviour x client "
                    "matrix (target/compat/matrix.md and .html).",
        epilog="Arguments after `--` go to pytest unchanged (e.g. -- -x).")
    p.add_argument("--kafka", metavar="HOST:PORT", help="an already running Kafka endpoint")
    p.add_argument("--mqtt", metavar="HOST:PORT", help="an already running MQTT endpoint")
    p.add_argument("--mqtt-ws", metavar="HOST:PORT",
                   help="its MQTT-over-WebSocket endpoint (WebSocket cases skipped without it)")
    p.add_argument("--amqp", metavar="HOST:PORT",
                   help="an already running AMQP 0-9-1 endpoint (guest/guest, vhost /)")
    p.add_argument("--reference", action="store_true",
                   help="also run the MQTT and AMQP cases against Debian's mosquitto and "
                        "rabbitmq-server; cells show Switchboard beside the reference")
    p.add_argument("--write-docs", action="store_true",
                   help="with --reference: also write docs/compatibility.md")
    p.add_argument("--only", metavar="PROTOCOLS",
                   help="comma-separated subset of kafka,mqtt,amqp to run")
    p.add_argument("-k", metavar="EXPRESSION", help="pytest -k expression")
    p.add_argument("--out", metavar="DIR", default=str(ROOT / "target" / "compat"),
                   help="output directory (default target/compat)")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    argv = list(argv)
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    a = p.parse_args(argv)
    externals = {proto: getattr(a, proto) for proto in PROTOCOLS if getattr(a, proto)}
    if a.mqtt_ws and not a.mqtt:
        p.error("--mqtt-ws needs --mqtt")
    if a.reference and externals:
        p.error("--reference runs against Switchboard and the reference brokers: it does not "
                "mix with --kafka / --mqtt / --amqp")
    if a.write_docs and not a.reference:
        p.error("--write-docs needs --reference (the document shows both)")
    only = set(PROTOCOLS)
    if a.only:
        only = {x.strip() for x in a.only.split(",") if x.strip()}
        bad = only - set(PROTOCOLS)
        if bad:
            p.error(f"--only: unknown protocol(s) {', '.join(sorted(bad))}")
    if a.k:
        extra = ["-k", a.k, *extra]
    return a, externals, only, extra


def plan(a, externals, only):
    if externals:
        protos = [x for x in PROTOCOLS if x in externals and x in only]
        args = []
        for proto, addr in externals.items():
            args += [f"--{proto}", addr]
        if a.mqtt_ws:
            args += ["--mqtt-ws", a.mqtt_ws]
        title = "external " + ", ".join(f"{k} {v}" for k, v in externals.items())
        return [Run("external", title, matrix.files_for(protos), args)]
    runs = [Run("switchboard", "Switchboard",
                matrix.files_for([x for x in PROTOCOLS if x in only]), [])]
    if a.reference:
        protos = [x for x in ("mqtt", "amqp") if x in only]
        if protos:
            title = "reference (" + " / ".join(REFERENCE_NAMES[x] for x in protos) + ")"
            runs.append(Run("reference", title, matrix.files_for(protos),
                            ["--mqtt-broker=mosquitto", "--amqp-broker=rabbitmq"]))
    return runs


def main(argv=None):
    a, externals, only, extra = parse_args(sys.argv[1:] if argv is None else argv)
    runs = plan(a, externals, only)
    if not any(r.files for r in runs):
        print("nothing to run: no test files for the chosen protocols", file=sys.stderr)
        return 2
    bad_rows = matrix.check()
    if bad_rows:
        print(f"matrix.py: rules name undeclared rows: {bad_rows}", file=sys.stderr)
        return 2
    if not externals or "kafka" in only and "kafka" not in externals:
        binary = os.environ.get("SB_TEST_BIN", str(ROOT / "target" / "debug" / "switchboard"))
        if not externals and not os.path.exists(binary):
            print(f"no switchboard binary at {binary}: build it (cargo build --bin switchboard) "
                  f"or set SB_TEST_BIN", file=sys.stderr)
            return 2
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    color = a.color == "always" or (a.color == "auto" and sys.stdout.isatty()
                                    and "NO_COLOR" not in os.environ)
    progress = Progress()
    if "kafka" in externals and "kafka" in only:
        print("note: the Kafka tests create topics with fixed names (kp, kc, times, codec-*, …): "
              "point --kafka at an empty broker, or they fail with TOPIC_ALREADY_EXISTS")
    try:
        for run in runs:
            print(f"{run.title}: {len(run.files)} test files"
                  + (f" (pytest {' '.join(run.args)})" if run.args else ""))
            run_pytest(run, out_dir, extra, progress)
            c = run.counts()
            print(f"  {run.label}: {c['passed']} passed, {c['failed']} failed, "
                  f"{c['skipped']} skipped in {run.seconds:.0f} s (log: {rel(run.log_path)})")
            if run.returncode not in (0, 1, 5):  # interrupted, internal or usage error
                tail = run.log_path.read_text(errors="replace").strip().splitlines()[-8:]
                print(f"  pytest exited with {run.returncode}:")
                print("\n".join("    " + t for t in tail))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

    for run in runs:
        (out_dir / f"results-{run.label}.json").write_text(json.dumps(
            {"title": run.title, "files": run.files, "args": run.args,
             "returncode": run.returncode, "results": run.results}, indent=1) + "\n")

    m = Matrix(runs)
    total = {"passed": 0, "failed": 0, "skipped": 0}
    for run in runs:
        for k, v in run.counts().items():
            total[k] = total.get(k, 0) + v
    summary = "; ".join(f"{r.title}: {r.counts()['passed']} passed, {r.counts()['failed']} "
                        f"failed, {r.counts()['skipped']} skipped" for r in runs) + "."
    generated_by = shlex.join(["compat-tests/run", *(sys.argv[1:] if argv is None else argv)])
    heading = "Switchboard compatibility matrix" if not externals else \
        f"Compatibility matrix: {runs[0].title}"
    (out_dir / "matrix.md").write_text(markdown(m, heading, summary, generated_by))
    (out_dir / "matrix.html").write_text(html_page(m, heading, summary, generated_by))
    written = [out_dir / "matrix.md", out_dir / "matrix.html"]
    if a.write_docs:
        doc = markdown(m, "Compatibility", summary, generated_by)
        intro = ("<!-- Generated by compat-tests/run --reference --write-docs; do not edit by "
                 "hand. -->\n")
        doc = intro + doc.replace(
            "# Compatibility\n",
            "# Compatibility\n\nSwitchboard against real client libraries and tools "
            "(compat-tests/python), beside the reference brokers: Debian's mosquitto for MQTT "
            "and rabbitmq-server for AMQP 0-9-1. Rows are behaviours, columns clients; the "
            "mapping is compat-tests/python/matrix.py.\n", 1)
        docs = ROOT / "docs" / "compatibility.md"
        docs.write_text(doc)
        written.append(docs)

    print(terminal(m, color))
    print()
    failures = [(r, n, res) for r in runs for n, res in r.results.items()
                if res["outcome"] == "failed"]
    if failures:
        print("Failed:")
        for r, n, res in failures:
            print(f"  [{r.label}] {matrix._short(n)}: {res['reason']}")
    skips = {}
    for r in runs:
        for n, res in r.results.items():
            if res["outcome"] == "skipped":
                skips[(r.label, res["reason"])] = skips.get((r.label, res["reason"]), 0) + 1
    if skips:
        print("Skipped:")
        for (label, reason), n in sorted(skips.items()):
            print(f"  [{label}] {n} x {reason}")
    if m.unmapped:
        print(f"warning: {len(m.unmapped)} test(s) not mapped in matrix.py: "
              + ", ".join(matrix._short(n) for n in m.unmapped[:5])
              + (" …" if len(m.unmapped) > 5 else ""))
    print("Wrote " + ", ".join(rel(p) for p in written))
    print(f"{total['passed']} passed, {total['failed']} failed, {total['skipped']} skipped")
    # pytest's own verdict counts too: a collection error, an internal error or an interrupted
    # run (2, 3, 4) must not pass as "0 failed".
    broken = [r.label for r in runs if r.returncode not in (0, 5)]
    if broken and not total["failed"]:
        print(f"pytest did not complete cleanly for: {', '.join(broken)}")
    return 1 if total["failed"] or broken else 0


if __name__ == "__main__":
    sys.exit(main())

"""Watch-mode latency, idle CPU and memory of `integrity-agent --watch` (bench/agent).

    python3 watch_latency.py --agent BIN --baseline B --root TREE --state-dir S \
        [--changes 100] [--gap 0.2] [--idle 60] [--json OUT] [--perf-idle SECS]

TREE is a tree of bench/make_tree.py (dNNN/dNN/fNNN, 1,000 files a directory) and B
its baseline. Starts the agent (--format json), waits for "watching … (fanotify|inotify)"
on stderr and for the first check's summary line on stdout, then makes CHANGES
changes one at a time, GAP seconds apart (modify, chmod, create, delete in turn, each
on a path not touched before): the latency of one is from a timestamp taken just
before its first syscall to the arrival of the first stdout line naming its path.
Then IDLE seconds without changes: utime+stime of the agent from /proc/PID/stat
(all threads). VmHWM and VmRSS from /proc/PID/status. SIGTERM at the end: exit 0
expected. Every change is undone afterwards (content, mode, files), so the tree stays
equal to its baseline. Prints a JSON object (and writes it to OUT).
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

TICKS = os.sysconf("SC_CLK_TCK")


class Agent:
    """The agent process, its stdout lines (with arrival times) and stderr lines."""

    def __init__(self, argv):
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.cond = threading.Condition()
        self.seen = {}          # path -> [arrival times]
        self.summaries = []     # (arrival, parsed summary line)
        self.stderr = []        # (arrival, text)
        self.watching = None    # the stderr line saying which backend
        self.lines = 0
        threading.Thread(target=self._out, daemon=True).start()
        threading.Thread(target=self._err, daemon=True).start()

    def _out(self):
        for raw in self.proc.stdout:
            now = time.monotonic()
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            with self.cond:
                self.lines += 1
                if "summary" in line:
                    self.summaries.append((now, line))
                elif "path" in line:
                    self.seen.setdefault(line["path"], []).append(now)
                self.cond.notify_all()

    def _err(self):
        for raw in self.proc.stderr:
            now = time.monotonic()
            text = raw.decode(errors="replace").rstrip("\n")
            with self.cond:
                self.stderr.append((now, text))
                if self.watching is None and "watching " in text:
                    self.watching = text
                self.cond.notify_all()

    def wait_for(self, predicate, timeout):
        with self.cond:
            return self.cond.wait_for(lambda: predicate() or self.proc.poll() is not None, timeout)

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14, 15)

    def status(self, key):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])  # kB
        return None


def plan(root, count):
    """count (kind, path) pairs on distinct files spread over the tree."""
    dirs = sorted(
        os.path.join(a, b)
        for a in os.listdir(root) if a.startswith("d")
        for b in os.listdir(os.path.join(root, a)) if b.startswith("d")
    )
    kinds = ["modify", "chmod", "create", "delete"]
    out = []
    for i in range(count):
        directory = os.path.join(root, dirs[(i * 397) % len(dirs)])
        kind = kinds[i % len(kinds)]
        if kind == "create":
            path = os.path.join(directory, f"bench-new-{i:04d}")
        else:
            path = os.path.join(directory, f"f{(i * 131 + 7) % 1000:03d}")
        out.append((kind, path))
    return out


def change(kind, path, undo):
    """Makes one change (the timestamp is taken by the caller just before)."""
    if kind == "modify":
        with open(path, "rb") as f:
            undo.append(("content", path, f.read()))
        t0 = time.monotonic()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        os.write(fd, b"bench-agent watch\n")
        os.close(fd)
    elif kind == "chmod":
        undo.append(("mode", path, os.lstat(path).st_mode & 0o7777))
        t0 = time.monotonic()
        os.chmod(path, 0o600)
    elif kind == "create":
        undo.append(("remove", path, None))
        t0 = time.monotonic()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, b"created by bench/agent\n")
        os.close(fd)
    else:
        st = os.lstat(path)
        with open(path, "rb") as f:
            undo.append(("recreate", path, (f.read(), st.st_mode & 0o7777)))
        t0 = time.monotonic()
        os.unlink(path)
    return t0


def revert(undo):
    for what, path, data in reversed(undo):
        try:
            if what == "content":
                with open(path, "wb") as f:
                    f.write(data)
            elif what == "mode":
                os.chmod(path, data)
            elif what == "remove":
                os.unlink(path)
            elif what == "recreate":
                content, mode = data
                with open(path, "wb") as f:
                    f.write(content)
                os.chmod(path, mode)
        except OSError as error:
            print(f"watch_latency: cannot undo {what} of {path}: {error}", file=sys.stderr)


def pct(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agent", required=True)
    ap.add_argument("--baseline", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--changes", type=int, default=100)
    ap.add_argument("--gap", type=float, default=0.2)
    ap.add_argument("--idle", type=float, default=60)
    ap.add_argument("--timeout", type=float, default=5.0, help="a change not reported by then is missed")
    ap.add_argument("--json")
    ap.add_argument("--perf-idle", type=float, default=0, help="also perf record the agent for SECS after the idle period")
    args = ap.parse_args()
    root = os.path.realpath(args.root)

    agent = Agent([args.agent, "--watch", "--baseline", args.baseline, "--root", root,
                   "--state-dir", args.state_dir, "--format", "json"])
    result = {"pid": agent.proc.pid}
    undo = []
    try:
        if not agent.wait_for(lambda: agent.watching is not None, 300) or agent.watching is None:
            raise SystemExit(f"watch_latency: the agent never said it was watching: {agent.stderr}")
        result["watching"] = agent.watching
        result["ready_s"] = round(next(t for t, s in agent.stderr if s == agent.watching) - agent.started, 3)
        if not agent.wait_for(lambda: agent.summaries, 1800) or not agent.summaries:
            raise SystemExit(f"watch_latency: no first check: {agent.stderr}")
        first_at, first = agent.summaries[0]
        result["first_check"] = {"s": round(first_at - agent.started, 3), "line": first}
        result["hwm_after_first_check_kb"] = agent.status("VmHWM")
        result["rss_after_first_check_kb"] = agent.status("VmRSS")
        time.sleep(1)

        latencies, missed, by_kind = [], [], {}
        cpu_before = agent.cpu_seconds()
        changes_started = time.monotonic()
        for kind, path in plan(root, args.changes):
            manifest = "/" + os.path.relpath(path, root)
            t0 = change(kind, path, undo)
            ok = agent.wait_for(lambda: any(t >= t0 for t in agent.seen.get(manifest, ())), args.timeout)
            arrivals = [t for t in agent.seen.get(manifest, ()) if t >= t0]
            if ok and arrivals:
                latency = min(arrivals) - t0
                latencies.append(latency)
                by_kind.setdefault(kind, []).append(latency)
            else:
                missed.append({"kind": kind, "path": manifest})
            rest = t0 + args.gap - time.monotonic()
            if rest > 0:
                time.sleep(rest)
        changes_took = time.monotonic() - changes_started
        cpu_changes = agent.cpu_seconds() - cpu_before
        time.sleep(2)
        last = agent.summaries[-1][1]
        result["changes"] = {
            "count": args.changes,
            "reported": len(latencies),
            "missed": missed,
            "median_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
            "p90_ms": round(pct(latencies, 0.9) * 1000, 1) if latencies else None,
            "worst_ms": round(max(latencies) * 1000, 1) if latencies else None,
            "by_kind_median_ms": {k: round(statistics.median(v) * 1000, 1) for k, v in by_kind.items()},
            "by_kind_worst_ms": {k: round(max(v) * 1000, 1) for k, v in by_kind.items()},
            "watch_summaries": sum(1 for _, s in agent.summaries if s.get("check", {}).get("mode") == "watch"),
            "last_summary": last,
            "cpu_s": round(cpu_changes, 3),
            "took_s": round(changes_took, 3),
        }

        time.sleep(3)
        lines_before = agent.lines
        cpu_before, t_before = agent.cpu_seconds(), time.monotonic()
        time.sleep(args.idle)
        cpu_after, t_after = agent.cpu_seconds(), time.monotonic()
        result["idle"] = {
            "s": round(t_after - t_before, 2),
            "cpu_s": round(cpu_after - cpu_before, 3),
            "cpu_percent_of_core": round(100 * (cpu_after - cpu_before) / (t_after - t_before), 3),
            "stdout_lines": agent.lines - lines_before,
        }
        result["vm_hwm_kb"] = agent.status("VmHWM")
        result["vm_rss_kb"] = agent.status("VmRSS")
        if args.perf_idle > 0:
            data = f"{args.state_dir}/../perf-idle.data"
            subprocess.run(["perf", "record", "-q", "-g", "-F", "999", "-p", str(agent.proc.pid),
                            "-o", data, "--", "sleep", str(args.perf_idle)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            result["perf_idle_data"] = os.path.realpath(data)
    finally:
        if agent.proc.poll() is None:
            agent.proc.send_signal(signal.SIGTERM)
            try:
                result["exit"] = agent.proc.wait(30)
            except subprocess.TimeoutExpired:
                agent.proc.kill()
                result["exit"] = "killed after 30 s"
        else:
            result["exit"] = agent.proc.returncode
        revert(undo)
        result["stderr_tail"] = [s for _, s in agent.stderr[-5:]]
        warnings = [s for _, s in agent.stderr if "warning" in s]
        result["stderr_warnings"] = warnings[:20]
    text = json.dumps(result, indent=1)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

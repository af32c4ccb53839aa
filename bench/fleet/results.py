#!/usr/bin/env python3
"""The tables of bench/fleet/run from target/bench-fleet/ (Markdown on stdout).

One column per store that ran (sled: the embedded store, one service; postgres: two
replicas over one PostgreSQL, replica A killed -9 halfway through the steady state),
then the peak ramps side by side, the per-report costs, wrk's GET and 304 of the
baseline, and the arithmetic for 1,000,000 hosts from the measured costs.
"""
import json
import math
import os
import re
import statistics
import sys
import time

out = sys.argv[1]
CORES = os.cpu_count()


def load(name):
    path = os.path.join(out, name)
    return json.load(open(path)) if os.path.exists(path) else None


def read(name, default="?"):
    path = os.path.join(out, name)
    return open(path).read().strip() if os.path.exists(path) else default


def met(ok):
    return "met" if ok else "**missed**"


SHORT = {"sled": "sled", "postgres": "PG"}


def each(ok_of):
    """The verdict per store (`ok_of(store)`), one word when a single store ran."""
    if len(STORES) == 1:
        return met(ok_of(STORES[0]))
    return ", ".join(f"{SHORT[s]} {met(ok_of(s))}" for s in STORES)


def lsn(text):
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def probe(text):
    """`lsn|reports bytes|hosts bytes|database bytes|reports rows|WAL syncs` (--probe)."""
    if not isinstance(text, str) or "|" not in text:
        return None
    fields = text.split("|")
    return {"lsn": lsn(fields[0]), "reports_bytes": int(fields[1]),
            "hosts_bytes": int(fields[2]), "db_bytes": int(fields[3]),
            "rows": int(fields[4]),
            "commits": int(fields[5]) if len(fields) > 5 else None}


def delta(cpu):
    """WAL bytes, rows and database bytes between a phase's probes."""
    if not cpu:
        return None
    before, after = probe(cpu.get("probe_before")), probe(cpu.get("probe_after"))
    if not before or not after:
        return None
    commits = None
    if before.get("commits") is not None and after.get("commits") is not None:
        commits = after["commits"] - before["commits"]
    return {"wal": after["lsn"] - before["lsn"], "rows": after["rows"] - before["rows"],
            "db": after["db_bytes"] - before["db_bytes"], "commits": commits, "after": after}


STORES = [s for s in ("sled", "postgres") if load(f"{s}-steady.json")]
NAMES = {"sled": "embedded (sled), 1 service", "postgres": "PostgreSQL, 2 replicas"}
steady = {s: load(f"{s}-steady.json") for s in STORES}
peak = {s: load(f"{s}-peak.json") for s in STORES}


def errors(kind):
    return sum(n for code, n in kind["outcomes"].items() if code not in ("200", "201", "304"))


def lat(kind):
    l, s = kind["latency"], kind["sojourn"]
    return f"{l['p50_ms']:.1f} / {l['p99_ms']:.1f} / {l['max_ms']:.1f} ms (sojourn p99 {s['p99_ms']:.1f})"


def cores(cpu, with_pg=True):
    if not cpu or cpu.get("service_cores") is None:
        return "?"
    text = f"{cpu['service_cores']:.2f}"
    if with_pg:
        text += f" / {cpu['pg_cores']:.2f}" if cpu.get("pg_cores") is not None else " / –"
    text += f" / {cpu['sim_cores']:.2f}"
    if cpu.get("others_cores") is not None:
        text += f" (others {cpu['others_cores']:.2f})"
    return text


def row(measure, cells, goal="", verdict=""):
    print(f"| {measure} | " + " | ".join(cells) + f" | {goal} | {verdict} |")


def mb(kb):
    return f"{kb / 1024:.0f} MB" if kb else "?"


c = steady[STORES[0]]["config"] if STORES else None
print(f"## Issue 20: embedded store and PostgreSQL replicas ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, `bench/fleet/run`)\n")
print(f"Machine: {read('machine').replace(chr(10), '; ')}.\n")
if c:
    load0 = steady[STORES[0]]["load"]
    print(f"Steady state: {c['hosts']:,} hosts ({c['drifted_hosts']} drifted, {c['anomalies']} anomalies each), "
          f"one check per {c['interval_secs']} s each for {c['duration_secs']} s "
          f"(target {load0['target_rate']:.0f} reports/s + {load0['target_rate']:.0f} revalidations/s), "
          f"{c['connections']} keep-alive connections, everything on the same {CORES} cores. "
          f"PostgreSQL: {read('postgres-version', '').split(' on ')[0]}, "
          f"{read('postgres-settings', '').replace(chr(10), ', ')}.\n")
    print("| measure | " + " | ".join(NAMES[s] for s in STORES) + " | goal | |")
    print("|---|" + "---|" * len(STORES) + "---|---|")
    E = {s: steady[s]["enroll"] for s in STORES}
    L = {s: steady[s]["load"] for s in STORES}
    row(f"enrollment: {E[STORES[0]]['ok']:,} first reports (closed loop), rate; p50 / p99 / max",
        [f"{E[s]['achieved_rate']:.0f}/s; {lat(E[s])}" for s in STORES])
    def rep_ok(s):
        return L[s]["report"]["sojourn"]["p99_ms"] <= 100 and errors(L[s]["report"]) == 0
    row("reports acknowledged, rate; p50 / p99 / max",
        [f"{L[s]['report']['ok']:,} at {L[s]['report']['achieved_rate']:.0f}/s; {lat(L[s]['report'])}" for s in STORES],
        "sojourn p99 ≤ 100 ms", each(rep_ok))
    def rev_ok(s):
        return L[s]["revalidate"]["sojourn"]["p99_ms"] <= 100 and errors(L[s]["revalidate"]) == 0
    row("revalidations (304); p50 / p99 / max",
        [f"{L[s]['revalidate']['ok']:,}; {lat(L[s]['revalidate'])}" for s in STORES],
        "sojourn p99 ≤ 100 ms", each(rev_ok))
    all_errors = {s: errors(L[s]["report"]) + errors(L[s]["revalidate"]) + errors(E[s]) for s in STORES}
    row("errors after fail-over (non-2xx/304, transport): reports, revalidations, enrollment",
        [f"{errors(L[s]['report'])}, {errors(L[s]['revalidate'])}, {errors(E[s])}" for s in STORES],
        "0", each(lambda s: all_errors[s] == 0))

    def kill_cell(s):
        k = L[s].get("kill")
        if not k:
            return "–"
        after = k.get("report-after-kill", {})
        rev = k.get("revalidate-after-kill", {})
        fo = L[s]["report"].get("failovers", 0) + L[s]["revalidate"].get("failovers", 0)
        return (f"replica A killed at {k['at_secs']:.0f} s ({'done' if k['killed'] else 'FAILED'}); "
                f"{fo:,} fail-overs in all; the {k['window_secs']:.0f} s after: reports p99 "
                f"{after.get('sojourn', {}).get('p99_ms', 0):.1f} ms (max {after.get('sojourn', {}).get('max_ms', 0):.1f}), "
                f"revalidations p99 {rev.get('sojourn', {}).get('p99_ms', 0):.1f} ms, "
                f"{errors(after) if after else 0} errors")
    if any(L[s].get("kill") for s in STORES):
        row("kill -9 of one replica halfway", [kill_cell(s) for s in STORES])
    V = {s: steady[s]["verify"] for s in STORES}
    row("lost (service API): acknowledged, not stored",
        [f"{V[s]['lost']} of {V[s]['acknowledged']:,} ({V[s]['method']})" for s in STORES],
        "0", each(lambda s: V[s]["lost"] == 0 and V[s]["acknowledged"] > 0))
    check = read("postgres-steady-check", "")
    if "postgres" in STORES and check:
        n, missing, changed, twice, dups, unacked = (int(x) for x in check.split("|"))
        row("lost (PostgreSQL itself): acknowledged; missing / other bytes / acknowledged twice / duplicate rows; stored but never acknowledged",
            ["–" if s != "postgres" else f"{n:,}; {missing} / {changed} / {twice} / {dups}; {unacked}" for s in STORES],
            "0 / 0 / 0 / 0", met(n > 0 and missing + changed + twice + dups == 0))
    row("CPU, service / PostgreSQL / simulator (other processes on the machine) in cores of %d: enrollment; steady state" % CORES,
        [f"{cores(E[s].get('cpu'))}; {cores(L[s].get('cpu'))}" for s in STORES])

    def rss(s):
        svc = steady[s]["service"]
        end = (svc.get("end") or {}).get("rss_kb", 0)
        return f"{mb(end)} / {mb(max(svc.get('rss_max_sampled_kb') or 0, end))} / {mb((svc.get('end') or {}).get('hwm_kb', 0))}"
    row("service RSS at the end / max sampled / VmHWM (PostgreSQL: the surviving replica)", [rss(s) for s in STORES], "≤ 512 MB",
        each(lambda s: 0 < (steady[s]["service"].get("end") or {}).get("hwm_kb", 0) <= 512 * 1024))
    R = {s: steady[s]["reads"] for s in STORES}
    row("`GET /fleet`, median (max) of 10", [f"{R[s]['fleet']['median_ms']:.1f} ms ({R[s]['fleet']['max_ms']:.1f})" for s in STORES],
        "≤ 100 ms", each(lambda s: R[s]["fleet"]["median_ms"] <= 100))
    row("`GET /drift?image_id=`, median (max) of 10",
        [f"{R[s]['drift']['median_ms']:.1f} ms ({R[s]['drift']['max_ms']:.1f}), {R[s]['drift_groups']} groups" for s in STORES],
        "≤ 100 ms", each(lambda s: R[s]["drift"]["median_ms"] <= 100))

    def size(s, when):
        text = read(f"{s}-store-{when}", "")
        if not text:
            return "?"
        return f"{int(text.split('|')[0]) / 1e6:.0f} MB"
    row("store on disk after the steady state (sled: its directory; PostgreSQL: `pg_database_size`)",
        [size(s, "after-steady") for s in STORES])
    row("start-up with the run's fleet stored (to `/healthz`): sled after the run; replica A after its kill",
        [f"{read(f'{s}-restart-secs')} s" for s in STORES])

# The peak ramps, side by side.
P = {s: peak[s] for s in STORES if peak.get(s)}
if P:
    first = next(iter(P.values()))
    pc = first["config"]
    print(f"\nPeak ingest: {pc['hosts']:,} more hosts enroll, then open-loop signed reports at each rate for "
          f"{first['load']['step_secs']} s, hosts in turn, the steady state's hosts still stored "
          "(PostgreSQL: both replicas, A started again). CPU in cores of %d; per report in ms of CPU.\n" % CORES)
    print("| store | rate (reports/s) | achieved | p50 | p99 | sojourn p99 | not ok | CPU service / PostgreSQL / sim (others) | CPU ms per report: service / PostgreSQL | WAL per report | within goal |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for s, p in P.items():
        for st in p["load"]["steps"]:
            l, cpu = st["latency"], st.get("cpu") or {}
            bad = st["not_ok"] + st["dropped_overload"] + st["skipped_busy"]
            ok = max(st["ok"], 1)
            per = f"{1000 * (cpu.get('service_secs') or 0) / ok:.2f}"
            per += f" / {1000 * cpu['pg_secs'] / ok:.2f}" if cpu.get("pg_secs") is not None else " / –"
            d = delta(cpu)
            wal = f"{d['wal'] / max(d['rows'], 1) / 1024:.1f} KB" if d and d["rows"] else "–"
            print(f"| {s} | {st['rate']:.0f} | {st['achieved_rate']:.0f} | {l['p50_ms']:.1f} ms | {l['p99_ms']:.1f} ms | "
                  f"{st['sojourn']['p99_ms']:.1f} ms | {bad} | {cores(cpu)} | {per} | {wal} | {'yes' if st['within_goal'] else 'no'} |")
    print()
    for s, p in P.items():
        knee, pv = p["knee_rate"], p["verify"]
        goal = 1000 if s == "postgres" else 2000
        knee_text = f"**{knee:.0f} reports/s**" if knee else "none of the steps met p99 ≤ 100 ms without errors"
        print(f"* {NAMES[s]}: knee {knee_text} (goal ≥ {goal:,}: {met(bool(knee) and knee >= goal)}); "
              f"lost in the peak run (service API): {pv['lost']} of {pv['acknowledged']:,} acknowledged.", end="")
        check = read(f"{s}-peak-check", "")
        if s == "postgres" and check:
            n, missing, changed, twice, dups, unacked = (int(x) for x in check.split("|"))
            print(f" In PostgreSQL: {n:,} acknowledged, {missing} missing, {changed} with other bytes, {dups} duplicate rows.", end="")
        print()

# What one report costs.
if "postgres" in STORES:
    print("\nPer-report costs (PostgreSQL):\n")
    end = read("postgres-store-at-end", "")
    if end:
        db, rep_bytes, host_bytes, rows, host_rows = (int(x) for x in end.split("|"))
        print(f"* at the end: {rows:,} reports, {host_rows:,} hosts; `reports` {rep_bytes / 1e6:.0f} MB "
              f"(**{rep_bytes / max(rows, 1):.0f} bytes per report**, indexes and TOAST included), "
              f"`hosts` {host_bytes / 1e6:.0f} MB ({host_bytes / max(host_rows, 1):.0f} bytes per host), "
              f"database {db / 1e6:.0f} MB ({db / max(rows, 1):.0f} bytes per report, all tables)")
    L = steady["postgres"]["load"]
    d = delta(L.get("cpu"))
    if d and d["rows"]:
        print(f"* steady state: {d['rows']:,} reports written, WAL {d['wal'] / 1e6:.0f} MB: "
              f"**{d['wal'] / d['rows'] / 1024:.1f} KB of WAL per report** (with its host row; checkpoints' full pages included)")
    E = steady["postgres"]["enroll"]
    d = delta(E.get("cpu"))
    if d and d["rows"]:
        print(f"* enrollment: {d['rows']:,} first reports, WAL {d['wal'] / d['rows'] / 1024:.1f} KB per enrollment")
    if "postgres" in P:
        best = None
        for st in P["postgres"]["load"]["steps"]:
            cpu = st.get("cpu") or {}
            if st["within_goal"] and cpu.get("service_secs") is not None:
                best = (st, cpu)
        if best:
            st, cpu = best
            d = delta(cpu)
            print(f"* at {st['rate']:.0f} reports/s (the knee): service {1000 * cpu['service_secs'] / st['ok']:.2f} ms of CPU per report "
                  f"(both replicas), PostgreSQL {1000 * (cpu.get('pg_secs') or 0) / st['ok']:.2f} ms, simulator "
                  f"{1000 * cpu['sim_secs'] / st['ok']:.2f} ms"
                  + (f"; WAL {d['wal'] / max(d['rows'], 1) / 1024:.1f} KB per report, {d['wal'] / cpu['wall_secs'] / 1e6:.1f} MB/s" if d else ""))
follow = load("postgres-follow.json")
if follow and follow["load"]:
    st = follow["load"]["steps"][0]
    cpu = st.get("cpu") or {}
    each = cpu.get("service_secs_each") or []
    if len(each) == 2 and None not in each and st["ok"]:
        print(f"* following: {st['ok']:,} reports at {st['achieved_rate']:.0f}/s all to replica A: A used "
              f"{1000 * each[0] / st['ok']:.2f} ms of CPU per report, B (only following A's writes) "
              f"{1000 * each[1] / st['ok']:.2f} ms, PostgreSQL {1000 * (cpu.get('pg_secs') or 0) / st['ok']:.2f} ms "
              f"(p99 {st['latency']['p99_ms']:.1f} ms, sojourn p99 {st['sojourn']['p99_ms']:.1f} ms)")
if "postgres" in P:
    parts = []
    for st in P["postgres"]["load"]["steps"]:
        d = delta(st.get("cpu"))
        if d and d.get("commits") and d["rows"]:
            parts.append(f"{st['rate']:.0f}/s: {d['rows'] / d['commits']:.1f}")
    if parts:
        print("* reports per WAL sync (fdatasync: the group commit of the replicas' fleet writers and "
              "PostgreSQL's own; `pg_stat_wal.wal_sync`): " + ", ".join(parts))
if "sled" in P:
    for st in P["sled"]["load"]["steps"]:
        cpu = st.get("cpu") or {}
        if st["rate"] == 1000 and cpu.get("service_secs") is not None:
            print(f"* embedded store at 1000 reports/s: service {1000 * cpu['service_secs'] / max(st['ok'], 1):.2f} ms of CPU per report"
                  f"; store on disk {int(read('sled-store-at-end', '0')) / 1e6:.0f} MB at the end")

# wrk: GET and 304 of the baseline.
def wrk(path):
    text = open(path).read()
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errs = re.search(r"Socket errors: (.*)", text)

    def ms(q):
        m = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
    return {"rate": rate, "bad": int(bad.group(1)) if bad else 0, "errors": errs.group(1) if errs else "",
            "p50": ms(50), "p99": ms(99)}


runs = {}
for name in sorted(os.listdir(out)):
    m = re.match(r"(sled|postgres)-(get|304)-(\d+)\.wrk$", name)
    if m:
        runs.setdefault((m.group(1), m.group(2)), []).append(wrk(os.path.join(out, name)))
if runs:
    print(f"\n`GET /baselines/{{id}}` of the cached {int(read('baseline-bytes', '0')):,}-byte baseline, `wrk -t1`, "
          f"{len(runs.get(('sled', 'get'), []))} alternating runs each, medians (PostgreSQL: replica B):\n")
    print("| request | connections | embedded (sled) | PostgreSQL replica | ratio | goal | |")
    print("|---|---|---|---|---|---|---|")
    for kind, conns, label in (("get", 8, "`GET`, identity (200)"), ("304", 64, "`GET` with matching `If-None-Match` (304)")):
        a, b = runs.get(("sled", kind), []), runs.get(("postgres", kind), [])
        if not a:
            continue
        ra = statistics.median(r["rate"] for r in a)
        p99a = statistics.median(r["p99"] for r in a)
        cell_a = f"{ra:,.0f} req/s (p99 {p99a:.2f} ms)"
        if b:
            rb = statistics.median(r["rate"] for r in b)
            p99b = statistics.median(r["p99"] for r in b)
            clean = all(r["bad"] == 0 and not r["errors"] for r in a + b)
            print(f"| {label} | {conns} | {cell_a} | {rb:,.0f} req/s (p99 {p99b:.2f} ms) | {rb / ra:.2f}× | ≥ 0.8× | "
                  f"{met(rb / ra >= 0.8 and clean)}{'' if clean else ' (errors)'} |")
        else:
            print(f"| {label} | {conns} | {cell_a} | – | – | | |")

print(f"\nService log lines with error/warn: {read('service-log-problems').replace(chr(10), ', ')}. "
      f"PostgreSQL log lines with ERROR/FATAL/PANIC/WARNING: {read('postgres-log-problems', '–')}.")

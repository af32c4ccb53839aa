"""Helpers of bench/guard: a deterministic release tree, and the MTTR rounds.

    mttr.py tree DIR VERSION              # DIR/core (~200 MB, 2,000 files) and DIR/modules
    mttr.py run --root R --rounds N --seed S --out FILE.json [--archive TAR.ZST] [--settle]
    mttr.py report FILE.json              # Markdown rows, median / worst per kind
    mttr.py phases STRACE FILE.json       # phases from an strace of the guard daemon

`tree`: the seed's layout (bin, conf, lib, py, services, share, data) at a tenth of
bench/make_release_tree.py's size: 1,700 small files (256 B - 64 KiB, mostly text), 280
medium ones (16 KiB - 1 MiB, binaries and libraries, bin/ executable), 20 data packs
(the rest of 200 MiB). Content from 4 KiB blocks, random or pseudo-text, one seeded RNG.

`run`: the guard daemon must already watch R. Each round picks a regular file of the
active core with a seeded RNG, tampers with it (the kinds take turns: content = append
bytes, chmod = mode 4755, add = a new file beside it, delete = unlink), takes t0 from
the monotonic clock just before the tampering syscall, then polls every 1 ms:

* restored: the file has its original bytes (SHA-256) and mode again (added file gone,
  deleted file back). Cheap checks (lstat) first; the file is hashed only when its
  size and mode match and its (inode, ctime, size) was not hashed before.
* drift / healed: a new `"event":"drift"` / `"event":"healed"` record in
  R/logs/security/guard.jsonl (the guard logs "healed" after its full re-verification
  of the release, so that is the verified end of the repair).

MTTR of a round = the later of restored and healed. ~200 ms pause between rounds;
with --settle, the next round also waits for the full check the guard runs after every
heal (its "heartbeat" record), i.e. each tampering meets an idle guard.
"""
import argparse
import hashlib
import json
import math
import os
import random
import stat
import sys
import time

# --- tree -------------------------------------------------------------------------
TOTAL_CORE = 200 << 20
BLOCK = 4096
RANDOM_SHARE = {"text": 0.05, "binary": 0.25, "data": 0.2}


class Content:
    def __init__(self, seed):
        self.rng = random.Random(seed)
        words = random.Random(12345)
        letters = "abcdefghijklmnopqrstuvwxyz_"
        vocab = ["".join(words.choice(letters) for _ in range(words.randint(2, 11))) for _ in range(4000)]
        seps = [" ", " ", " ", " ", "(", ")", ", ", ": ", " = ", ".", "\n", "\n    "]
        parts, size = [], 0
        while size < (4 << 20):
            text = "".join(w + g for w, g in zip(words.choices(vocab, k=4096), words.choices(seps, k=4096)))
            parts.append(text)
            size += len(text)
        self.text = "".join(parts).encode()

    def file(self, size, kind):
        out = bytearray()
        while len(out) < size:
            n = min(BLOCK, size - len(out))
            if self.rng.random() < RANDOM_SHARE[kind]:
                out += self.rng.randbytes(n)
            else:
                start = self.rng.randrange(0, len(self.text) - n)
                out += self.text[start : start + n]
        return bytes(out)


def log_uniform(rng, low, high):
    return int(math.exp(rng.uniform(math.log(low), math.log(high))))


def tree(root, version):
    rng = random.Random(20261126)
    content = Content(7)
    files = []
    for pkg in range(10):
        for sub in range(10):
            for idx in range(12):
                files.append((f"py/pkg{pkg:02d}/sub{sub}/mod{idx:02d}.py", log_uniform(rng, 256, 65536), "text", 0o644))
    for idx in range(100):
        files.append((f"conf/c{idx // 25}/setting{idx:03d}.conf", log_uniform(rng, 256, 16384), "text", 0o644))
    for idx in range(20):
        files.append((f"services/omniscient-{idx:02d}.service", log_uniform(rng, 256, 4096), "text", 0o644))
    for idx in range(379):
        kind = "text" if idx % 3 else "binary"
        files.append((f"share/s{idx // 100:02d}/t{idx // 20 % 5}/item{idx:04d}.dat", log_uniform(rng, 512, 65536), kind, 0o644))
    for idx in range(40):
        files.append((f"bin/tool{idx:03d}", log_uniform(rng, 16384, 1 << 20), "binary", 0o755))
    for idx in range(240):
        files.append((f"lib/l{idx // 40:02d}/libmod{idx:04d}.so.1", log_uniform(rng, 16384, 1 << 20), "binary", 0o644))
    rest = TOTAL_CORE - sum(f[1] for f in files)
    weights = [rng.uniform(1, 4) for _ in range(20)]
    for idx, weight in enumerate(weights):
        files.append((f"data/pack{idx:02d}.bin", int(rest * weight / sum(weights)), "data", 0o644))
    core = os.path.join(root, "core")
    for rel, size, kind, mode in files:
        write(os.path.join(core, rel), content.file(size, kind), mode)
    for idx in range(0, 240, 40):
        os.symlink(f"libmod{idx:04d}.so.1", os.path.join(core, f"lib/l{idx // 40:02d}/libmod{idx:04d}.so"))
    for idx in range(60):
        name = ["osint", "forensics", "hud"][idx % 3]
        write(os.path.join(root, "modules", name, f"m{idx // 20}", f"part{idx:03d}.py"),
              content.file(log_uniform(rng, 1024, 256 << 10), "text"), 0o644)
    write(os.path.join(core, "VERSION"), f"{version}\n".encode(), 0o644)


def write(path, data, mode):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as out:
        out.write(data)
    os.chmod(path, mode)


# --- run --------------------------------------------------------------------------
KINDS = ["content", "chmod", "add", "delete"]


def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as src:
        while chunk := src.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class Log:
    """New records of guard.jsonl (reads only what was appended)."""

    def __init__(self, path):
        self.path = path
        self.offset = os.path.getsize(path) if os.path.exists(path) else 0
        self.partial = b""
        self.records = []

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        if not data:
            return []
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        new = []
        for line in lines:
            try:
                new.append(json.loads(line))
            except ValueError:
                new.append({"event": "?", "raw": line.decode(errors="replace")})
        self.records += new
        return new


def archive_offsets(archive):
    """Path below core/ -> offset of its data in the decompressed tar (how much of the
    archive the guard decompresses before it reaches the entry)."""
    import subprocess
    import tarfile

    proc = subprocess.Popen(["zstd", "-dcq", archive], stdout=subprocess.PIPE)
    offsets = {}
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        for member in tar:
            offsets[os.path.normpath(member.name)] = member.offset_data
    proc.wait()
    return offsets


def ms(a, b):
    return None if a is None or b is None else (b - a) / 1e6


def run(args):
    root = args.root
    core = os.path.realpath(os.path.join(root, "core"))
    files = []
    for dirpath, dirnames, filenames in os.walk(core):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                files.append(path)
    if not files:
        sys.exit(f"mttr.py: no regular file under {core}")
    rng = random.Random(args.seed)
    plan = []
    for i in range(args.rounds):
        kind = KINDS[i % len(KINDS)]
        path = rng.choice(files)
        if kind == "add":
            plan.append((kind, path, os.path.join(os.path.dirname(path), f"bench-added-{args.seed}-{i:02d}.py"), rng.randbytes(4096)))
        elif kind == "content":
            plan.append((kind, path, path, b"\n# tampered by bench/guard round %d\n" % i + rng.randbytes(64)))
        else:
            plan.append((kind, path, path, None))
    offsets = archive_offsets(args.archive) if args.archive else {}
    log = Log(os.path.join(root, "logs/security/guard.jsonl"))
    rounds = []
    for i, (kind, path, target, payload) in enumerate(plan):
        st = os.lstat(path)
        want_mode, want_size = stat.S_IMODE(st.st_mode), st.st_size
        want_sha = digest(path)
        log.poll()  # skip anything older
        first = len(log.records)

        t0_wall = time.time()
        t0 = time.monotonic_ns()
        if kind == "content":
            with open(path, "ab") as f:
                f.write(payload)
        elif kind == "chmod":
            os.chmod(path, 0o4755)
        elif kind == "add":
            with open(target, "wb") as f:
                f.write(payload)
        else:
            os.unlink(path)
        t_written = time.monotonic_ns()

        hashed = set()
        t_restored = t_drift = t_healed = None
        deadline = t0 + int(args.timeout * 1e9)
        failure = None
        while True:
            now = time.monotonic_ns()
            if t_restored is None:
                ok = False
                if kind == "add":
                    ok = not os.path.lexists(target)
                else:
                    try:
                        cur = os.lstat(path)
                    except FileNotFoundError:
                        cur = None
                    if cur is not None and stat.S_ISREG(cur.st_mode) and stat.S_IMODE(cur.st_mode) == want_mode \
                            and cur.st_size == want_size:
                        sig = (cur.st_ino, cur.st_ctime_ns, cur.st_size)
                        if sig not in hashed:
                            hashed.add(sig)
                            try:
                                ok = digest(path) == want_sha
                            except FileNotFoundError:
                                ok = False
                if ok:
                    t_restored = now
            for record in log.poll():
                event = record.get("event")
                if event == "drift" and t_drift is None:
                    t_drift = now
                elif event == "healed" and t_healed is None:
                    t_healed = now
                elif event in ("rollback", "heal-failed", "heal-incomplete"):
                    failure = f"guard: {event}: {record.get('msg')}"
            if failure or (t_restored is not None and t_healed is not None):
                break
            if now > deadline:
                failure = f"timeout after {args.timeout} s (restored={t_restored is not None}, healed={t_healed is not None})"
                break
            time.sleep(0.001)

        # Final check: the file is (still) exactly as the manifest says.
        if not failure:
            if kind == "add":
                intact = not os.path.lexists(target)
            else:
                cur = os.lstat(path)
                intact = stat.S_IMODE(cur.st_mode) == want_mode and digest(path) == want_sha
            if not intact:
                failure = "the file differs again after the healed record"
        # Settled mode: wait for the guard's full check that follows every heal (a
        # heartbeat record), so that the next round meets an idle guard.
        t_idle = None
        if args.settle and not failure:
            settle_deadline = time.monotonic_ns() + int(min(args.timeout, 10) * 1e9)
            while t_idle is None and time.monotonic_ns() < settle_deadline:
                for record in log.poll():
                    if record.get("event") == "heartbeat" and t_idle is None:
                        t_idle = time.monotonic_ns()
                time.sleep(0.001)
        new = log.records[first:]
        end = None if t_restored is None or t_healed is None else max(t_restored, t_healed)
        rel = os.path.relpath(path, core)
        result = {
            "round": i,
            "kind": kind,
            "path": os.path.relpath(target, core),
            "size": want_size,
            "archive_offset": offsets.get(os.path.normpath(rel)),
            "t0_wall": t0_wall,
            "write_ms": ms(t0, t_written),
            "drift_ms": ms(t0, t_drift),
            "restored_ms": ms(t0, t_restored),
            "healed_ms": ms(t0, t_healed),
            "mttr_ms": ms(t0, end),
            "idle_ms": ms(t0, t_idle),
            "records": [r.get("event") for r in new],
            "healed_records": sum(1 for r in new if r.get("event") == "healed"),
            "drift_entries": [d for r in new if r.get("event") == "drift" for d in r.get("data", {}).get("drift", [])],
            "failure": failure,
        }
        rounds.append(result)
        print(
            f"round {i:2d} {kind:7s} {result['path']} ({want_size} B"
            + (f", at {result['archive_offset'] / 1e6:.0f} MB of the tar" if result["archive_offset"] is not None else "")
            + "): "
            + (f"drift {result['drift_ms']:.1f} ms, restored {result['restored_ms']:.1f} ms, "
               f"healed {result['healed_ms']:.1f} ms" if not failure else f"FAILED: {failure}"),
            file=sys.stderr,
        )
        time.sleep(0.2)
        log.poll()
    with open(args.out, "w") as out:
        json.dump(rounds, out, indent=1)
    return 0 if all(r["failure"] is None for r in rounds) else 1


def median(values):
    v = sorted(values)
    n = len(v)
    if n == 0:
        return float("nan")
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def report(args):
    """Markdown rows: per kind and overall, median / worst of each phase."""
    rounds = json.load(open(args.results))
    ok = [r for r in rounds if r["failure"] is None]
    rows = []
    for kind in KINDS + ["all"]:
        sel = [r for r in ok if kind == "all" or r["kind"] == kind]
        total = sum(1 for r in rounds if kind == "all" or r["kind"] == kind)
        if not total:
            continue
        cells = []
        for key in ("drift_ms", "restored_ms", "healed_ms", "mttr_ms"):
            vals = [r[key] for r in sel]
            cells.append(f"{median(vals):.0f} / {max(vals):.0f}" if vals else "–")
        name = "**all**" if kind == "all" else kind
        mttr = f"**{cells[3]}**" if kind == "all" else cells[3]
        rows.append(f"| {name} | {len(sel)}/{total} | {cells[0]} | {cells[1]} | {cells[2]} | {mttr} |")
    print("\n".join(rows))
    print(f"WORST {max((r['mttr_ms'] for r in ok), default=float('nan')):.0f}")
    print(f"MEDIAN {median([r['mttr_ms'] for r in ok]):.0f}")
    print(f"FAILED {len(rounds) - len(ok)}")
    print(f"HEALED_RECORDS {sum(r['healed_records'] for r in rounds)}")
    print("RAW " + " ".join(
        f"{r['kind'][:3]}:{r['mttr_ms']:.0f}" if r["failure"] is None else f"{r['kind'][:3]}:FAILED" for r in rounds))
    for r in rounds:
        if r["failure"]:
            print(f"FAILURE round {r['round']} {r['kind']} {r['path']}: {r['failure']}")


def phases(args):
    """Phases of each round from `strace -f -ttt -T` of the guard daemon (wall clock,
    like the rounds' t0_wall). Marker syscalls: poll returning an event, the 15 ms
    settle sleep, flock(LOCK_EX|LOCK_NB) on the root's lock (drift found), renames of
    guard.state (one per security record), the quarantine and restore renames,
    inotify_init1 (new watches after a heal)."""
    import re

    rounds = json.load(open(args.results))
    line_re = re.compile(r"^(\d+)\s+(\d+\.\d+)\s+(\w+)\((.*?)(?:\) += (.*?) <(\d+\.\d+)>)?$")
    unfinished_re = re.compile(r"^(\d+)\s+(\d+\.\d+)\s+(\w+)\((.*) <unfinished \.\.\.>$")
    resumed_re = re.compile(r"^(\d+)\s+(\d+\.\d+)\s+<\.\.\. (\w+) resumed>(.*?)\) += (.*?) <(\d+\.\d+)>$")
    pending = {}  # pid -> (ts, call, args) of a call another thread's line interrupted
    events = []
    for line in open(args.strace):
        line = line.rstrip("\n")
        m = unfinished_re.match(line)
        if m:
            pending[m.group(1)] = (m.group(2), m.group(3), m.group(4))
            continue
        m = resumed_re.match(line)
        if m and m.group(1) in pending:
            ts, call, rest = pending.pop(m.group(1))
            pid, result, dur = m.group(1), m.group(5), m.group(6)
            rest += m.group(4)
        else:
            m = line_re.match(line)
            if not m:
                continue
            pid, ts, call, rest, result, dur = m.groups()
        ts = float(ts)
        end = ts + float(dur) if dur else ts
        if call == "poll" and result and result.startswith("1 "):
            events.append((end, "wake"))
        elif call == "clock_nanosleep":
            events.append((end, "settled"))
        elif call == "flock" and "LOCK_EX|LOCK_NB" in rest:
            events.append((ts, "locked"))
        elif call in ("rename", "renameat", "renameat2") and "/logkeys/" in rest and ".state" in rest:
            events.append((end, "record"))
        elif call in ("rename", "renameat", "renameat2") and "/state/quarantine/" in rest:
            events.append((end, "quarantined"))
        elif call in ("rename", "renameat", "renameat2") and ".bulletproof-restore." in rest:
            events.append((end, "restored"))
        elif call in ("chmod", "fchmodat") and "/install/releases/" in rest and ".bulletproof-restore." not in rest:
            events.append((end, "restored"))
        elif call == "inotify_init1":
            events.append((ts, "rewatch"))
    events.sort()
    names = ["wake", "settled", "locked", "drift logged", "quarantined", "restored", "healed logged", "rewatch", "idle"]
    table = {k: {n: [] for n in names} for k in KINDS}
    for idx, r in enumerate(rounds):
        t0 = r["t0_wall"]
        t_end = rounds[idx + 1]["t0_wall"] if idx + 1 < len(rounds) else float("inf")
        mine = [(t, e) for t, e in events if t0 <= t < t_end]
        marks = {}
        records = 0
        for t, e in mine:
            if e == "record":
                records += 1
                key = {1: "drift logged", 2: "healed logged", 3: "idle"}.get(records)
                if key and key not in marks:
                    marks[key] = t
            elif e not in marks:
                marks[e] = t
        prev = t0
        for n in names:
            if n in marks:
                table[r["kind"]][n].append((marks[n] - prev) * 1000)
                prev = marks[n]
        r["phases"] = {n: (marks[n] - t0) * 1000 for n in names if n in marks}
    labels = {
        "wake": "tampering write → the guard's poll() returns (inotify)",
        "settled": "the guard's fixed 15 ms pause for a burst to settle",
        "locked": "load + verify the signed manifest, verify the touched paths (drift found)",
        "drift logged": "\"drift\" security record (fsync, signed checkpoint)",
        "quarantined": "quarantine rename + evidence line (fsync)",
        "restored": "restore: stream the archive up to the entry, hash, fsync, rename (chmod: metadata)",
        "healed logged": "full re-verification of the release + \"healed\" record",
        "rewatch": "(after the record) until new inotify watches start",
        "idle": "new watches on every directory + the full check that follows them",
    }
    print("| phase (median ms; from the previous mark) | " + " | ".join(KINDS) + " |")
    print("|---|" + "---|" * len(KINDS))
    for n in names:
        cells = []
        for k in KINDS:
            v = table[k][n]
            cells.append(f"{median(v):.0f}" if v else "–")
        print(f"| {labels[n]} | " + " | ".join(cells) + " |")
    rates = {k: [] for k in ("content", "delete")}
    for r in rounds:
        p = r.get("phases", {})
        if r["kind"] in rates and r.get("archive_offset") and "restored" in p:
            start = p.get("quarantined", p.get("drift logged"))
            if start is not None and p["restored"] > start:
                rates[r["kind"]].append(r["archive_offset"] / 1e6 / ((p["restored"] - start) / 1000))
    cells = [f"{median(rates[k]):.0f}" if k in rates and rates[k] else "–" for k in KINDS]
    print("| restore rate: MB of the tar before the entry ÷ restore time (MB/s) | " + " | ".join(cells) + " |")
    json.dump(rounds, open(args.results, "w"), indent=1)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "tree":
        tree(sys.argv[2], sys.argv[3])
        return 0
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--root", required=True)
    r.add_argument("--rounds", type=int, default=20)
    r.add_argument("--seed", type=int, default=7)
    r.add_argument("--timeout", type=float, default=60)
    r.add_argument("--archive", help="core-VER.tar.zst, for the entries' offsets")
    r.add_argument("--settle", action="store_true", help="wait for the guard's post-heal full check between rounds")
    r.add_argument("--out", required=True)
    p = sub.add_parser("report")
    p.add_argument("results")
    ph = sub.add_parser("phases")
    ph.add_argument("strace")
    ph.add_argument("results")
    args = parser.parse_args()
    return {"run": run, "report": report, "phases": phases}[args.cmd](args) or 0


if __name__ == "__main__":
    sys.exit(main())

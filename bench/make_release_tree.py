"""Deterministic release trees for bench/update.

    make_release_tree.py base DIR VERSION     # DIR/core (~1 GiB, 20,000 files) and DIR/modules
    make_release_tree.py change DIR VERSION   # DIR is a copy of a base tree: change a few files

The core is the seed's layout (bin, conf, services, py, lib, share, data) with a
realistic size mix: ~17,400 small files (256 B - 64 KiB, mostly text), ~2,550 medium
ones (16 KiB - 1 MiB, binaries and libraries), 20 large data packs (the rest of the
1 GiB). Content is built from 4 KiB blocks, each either random bytes or pseudo-text
(words from a fixed vocabulary), in proportions per kind of file, so zstd -3 gets about
2x overall. Everything comes from one seeded RNG: the same command gives the same bytes.

Both modes write core/VERSION and core/checksums.txt (the seed's per-file list,
`sha256sum` format, paths `core/...`, regular files except itself), which the seed's
post-verify (`sha256sum --check core/checksums.txt`) reads.
"""
import hashlib
import os
import random
import sys

TOTAL_CORE = 1 << 30
BLOCK = 4096
# Share of random (incompressible) 4 KiB blocks per kind of file.
RANDOM_SHARE = {"text": 0.05, "binary": 0.25, "data": 0.2}


class Content:
    def __init__(self, seed):
        self.rng = random.Random(seed)
        words_rng = random.Random(12345)
        letters = "abcdefghijklmnopqrstuvwxyz_"
        vocab = [
            "".join(words_rng.choice(letters) for _ in range(words_rng.randint(2, 11)))
            for _ in range(4000)
        ]
        seps = [" ", " ", " ", " ", "(", ")", ", ", ": ", " = ", ".", "\n", "\n    "]
        parts = []
        size = 0
        while size < (16 << 20):
            chunk = words_rng.choices(vocab, k=4096)
            glue = words_rng.choices(seps, k=4096)
            text = "".join(w + g for w, g in zip(chunk, glue))
            parts.append(text)
            size += len(text)
        self.text = "".join(parts).encode()

    def block(self, n, random_share):
        if self.rng.random() < random_share:
            return self.rng.randbytes(n)
        start = self.rng.randrange(0, len(self.text) - n)
        return self.text[start : start + n]

    def file(self, size, kind):
        share = RANDOM_SHARE[kind]
        out = bytearray()
        while len(out) < size:
            out += self.block(min(BLOCK, size - len(out)), share)
        return bytes(out)


def log_uniform(rng, low, high):
    import math

    return int(math.exp(rng.uniform(math.log(low), math.log(high))))


def plan(rng):
    """(relative path, size, kind) of every generated core file."""
    files = []
    # Small: python sources, configs, units, shared text and data (17,400).
    for pkg in range(40):
        for sub in range(10):
            for idx in range(32):
                files.append((f"py/pkg{pkg:02d}/sub{sub}/mod{idx:02d}.py", log_uniform(rng, 256, 65536), "text"))
    for idx in range(300):
        files.append((f"conf/c{idx // 50}/setting{idx:03d}.conf", log_uniform(rng, 256, 16384), "text"))
    for idx in range(60):
        files.append((f"services/omniscient-{idx:02d}.service", log_uniform(rng, 256, 4096), "text"))
    for idx in range(4240):
        kind = "text" if idx % 3 else "binary"
        files.append((f"share/s{idx // 400:02d}/t{idx // 40 % 10}/item{idx:04d}.dat", log_uniform(rng, 512, 65536), kind))
    # Medium: executables and libraries (2,550).
    for idx in range(150):
        files.append((f"bin/tool{idx:03d}", log_uniform(rng, 16384, 1 << 20), "binary"))
    for idx in range(2400):
        files.append((f"lib/l{idx // 40:02d}/libmod{idx:04d}.so.1", log_uniform(rng, 16384, 1 << 20), "binary"))
    # Large: data packs take the rest of the total (20).
    rest = TOTAL_CORE - sum(size for _, size, _ in files)
    weights = [rng.uniform(1, 4) for _ in range(20)]
    for idx, weight in enumerate(weights):
        files.append((f"data/pack{idx:02d}.bin", int(rest * weight / sum(weights)), "data"))
    return files


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def finish(root, version):
    """core/VERSION and core/checksums.txt (the seed's post-verify list)."""
    core = os.path.join(root, "core")
    write(os.path.join(core, "VERSION"), f"{version}\n".encode())
    lines = []
    for dirpath, dirnames, filenames in os.walk(core):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if rel == "core/checksums.txt" or os.path.islink(path):
                continue
            digest = hashlib.sha256()
            with open(path, "rb") as src:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
            lines.append(f"{digest.hexdigest()}  {rel}\n")
    write(os.path.join(core, "checksums.txt"), "".join(lines).encode())


def base(root, version):
    rng = random.Random(20261126)
    content = Content(1)
    core = os.path.join(root, "core")
    for rel, size, kind in plan(rng):
        write(os.path.join(core, rel), content.file(size, kind))
    # A few relative symlinks, as a real lib/ has.
    for idx in range(0, 400, 40):
        os.symlink(f"libmod{idx:04d}.so.1", os.path.join(core, f"lib/l{idx // 40:02d}/libmod{idx:04d}.so"))
    os.symlink("../bin/tool000", os.path.join(core, "services/launcher"))
    for idx in range(300):
        name = ["osint", "forensics", "hud"][idx % 3]
        size = log_uniform(rng, 1024, 256 << 10)
        write(os.path.join(root, "modules", name, f"m{idx // 30}", f"part{idx:03d}.py"), content.file(size, "text" if idx % 2 else "binary"))
    finish(root, version)


def change(root, version):
    """A point release: 12 sources, 4 libraries, 1 data pack and 2 module files change,
    5 files are added and 3 removed."""
    rng = random.Random(f"change-{version}")
    content = Content(f"content-{version}")
    core = os.path.join(root, "core")
    for idx in rng.sample(range(400), 12):
        rel = f"py/pkg{idx // 10:02d}/sub{idx % 10}/mod{idx % 32:02d}.py"
        write(os.path.join(core, rel), content.file(log_uniform(rng, 256, 65536), "text"))
    for idx in rng.sample(range(2400), 4):
        write(os.path.join(core, f"lib/l{idx // 40:02d}/libmod{idx:04d}.so.1"), content.file(log_uniform(rng, 16384, 1 << 20), "binary"))
    pack = os.path.join(core, "data/pack07.bin")
    write(pack, content.file(os.path.getsize(pack), "data"))
    for idx in range(5):
        write(os.path.join(core, f"py/pkg00/new/added{idx}.py"), content.file(log_uniform(rng, 256, 65536), "text"))
    for rel in ["share/s00/t0/item0001.dat", "conf/c0/setting007.conf", "bin/tool149"]:
        os.remove(os.path.join(core, rel))
    for idx in (3, 10):
        path = os.path.join(root, "modules", ["osint", "forensics", "hud"][idx % 3], f"m{idx // 30}", f"part{idx:03d}.py")
        write(path, content.file(log_uniform(rng, 1024, 256 << 10), "text"))
    finish(root, version)


if __name__ == "__main__":
    mode, root, version = sys.argv[1:4]
    {"base": base, "change": change}[mode](root, version)

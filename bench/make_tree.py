"""Create N small files (1-4 KiB, deterministic content), 1000 per directory."""
import os
import sys

root, count = sys.argv[1], int(sys.argv[2])
for idx in range(count):
    directory = os.path.join(root, f"d{idx // 1000 // 100:03d}", f"d{idx // 1000 % 100:02d}")
    if idx % 1000 == 0:
        os.makedirs(directory, exist_ok=True)
    size = 1024 + (idx * 7919) % 3072
    with open(os.path.join(directory, f"f{idx % 1000:03d}"), "wb") as out:
        out.write((idx.to_bytes(8, "little") * (size // 8 + 1))[:size])

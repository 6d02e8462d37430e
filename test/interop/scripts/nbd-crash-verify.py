#!/usr/bin/python3
"""Verifier for the NBD crash test: reads "<block> <seed>" pairs (the blocks
whose last durable write is known) on stdin and checks each block's bytes.
Prints "ok N" or one "bad <block>" line per mismatch and exits 1."""
import random
import sys
import nbd

uri = sys.argv[1]
h = nbd.NBD()
h.connect_uri(uri)
bad = 0
n = 0
for line in sys.stdin:
    if not line.strip():
        continue
    block, seed = map(int, line.split())
    want = bytes(4096) if seed < 0 else random.Random(seed).randbytes(4096)
    if h.pread(4096, block * 4096) != want:
        print(f"bad {block}", flush=True)
        bad += 1
    n += 1
print(f"ok {n}" if bad == 0 else f"{bad} of {n} blocks wrong")
sys.exit(1 if bad else 0)

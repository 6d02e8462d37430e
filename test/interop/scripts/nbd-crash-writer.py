#!/usr/bin/python3
"""Writer for the NBD crash test: writes pseudo-random 4 KiB blocks, flushes
every few writes (or writes with FUA) and reports on stdout, one line each,
what it is about to write and what the server acknowledged:
    W <block>                             a write to this block is about to be sent
    U <block> <seed>                      a FUA write, acknowledged (durable)
    F <block> <seed> <block> <seed> ...   all writes issued since the last
                                          flush are now durable
It runs until its connection breaks (the server is killed) or --count writes.
Block contents are derived from the seed so the verifier can recompute them."""
import random
import sys
import nbd

uri, blocks, seed0, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed0)
h = nbd.NBD()
h.connect_uri(uri)
pending = []
try:
    for i in range(count):
        block = rng.randrange(blocks)
        seed = seed0 * 1_000_000 + i
        data = random.Random(seed).randbytes(4096)
        print(f"W {block}", flush=True)
        if rng.random() < 0.1 and h.can_fua():
            h.pwrite(data, block * 4096, nbd.CMD_FLAG_FUA)
            # An older unflushed write to this block must not be reported after this one.
            pending = [x for j in range(0, len(pending), 2) if pending[j] != block for x in pending[j:j + 2]]
            # FUA makes this write durable, but not earlier unflushed ones.
            print(f"U {block} {seed}", flush=True)
            continue
        h.pwrite(data, block * 4096)
        pending += [block, seed]
        if rng.random() < 0.25:
            h.flush()
            print("F " + " ".join(map(str, pending)), flush=True)
            pending = []
except nbd.Error as e:
    print(f"E {e}", file=sys.stderr, flush=True)
    sys.exit(3)

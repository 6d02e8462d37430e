"""Holds NBD connections open so a bench can measure a server's memory per client.

Usage: python3 nbd-hold.py URI [URI...]
Commands on stdin, one per line; each answer is one line on stdout:
  open K   grow to K open connections (URIs taken round-robin); each new one
           writes 4 KiB of its own pattern at its own offset and reads it back,
           so a copy-on-write server has to give it some overlay state.
           Answers "ok K" or "err MESSAGE".
  quit     disconnects every connection, answers "bye" and exits.
End of input is taken as quit. Needs the libnbd Python binding (module nbd).
"""
import sys

import nbd

MAX_CONNECTIONS = 256
BLOCK = 4096
STRIDE = 1 << 20  # one MiB apart, so no two clients touch the same overlay block


def main():
    uris = sys.argv[1:]
    if not uris:
        print("err no URI given", flush=True)
        return 2
    handles = []

    def open_one(i):
        h = nbd.NBD()
        h.connect_uri(uris[i % len(uris)])
        size = h.get_size()
        offset = (i * STRIDE) % max(BLOCK, size - BLOCK)
        offset -= offset % BLOCK
        pattern = bytes([(i * 37 + 11) & 0xFF]) * BLOCK
        if not h.is_read_only():
            h.pwrite(pattern, offset)
            if h.pread(BLOCK, offset) != pattern:
                raise RuntimeError(f"client {i}: read back differs from what it wrote")
        else:
            h.pread(BLOCK, offset)
        handles.append(h)

    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            break
        if words[0] == "open" and len(words) == 2 and words[1].isdigit():
            target = min(int(words[1]), MAX_CONNECTIONS)
            try:
                while len(handles) < target:
                    open_one(len(handles))
                print(f"ok {len(handles)}", flush=True)
            except Exception as e:  # report, keep the connections held so far
                print(f"err {e}".replace("\n", " "), flush=True)
            continue
        print(f"err unknown command {line.strip()!r}", flush=True)
    for h in handles:
        try:
            h.shutdown()
        except Exception:
            pass
    print("bye", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Writes the checked-in seed corpus (fuzz/corpus/<target>/) from the log's fixture segment.

Input layouts are described in server/src/fuzzing.rs (resp) and log/src/fuzzing.rs (record,
recovery). Run from anywhere; it overwrites the seed files it names and touches no others.
"""
import pathlib
import struct

here = pathlib.Path(__file__).resolve().parent
fixtures = here.parent / "log" / "tests" / "fixtures"
seg = (fixtures / "v1" / "0000000000000000.seg").read_bytes()
corrupt = (fixtures / "v1-corrupt" / "0000000000000000.seg").read_bytes()


def write(target, name, data):
    d = here / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


# resp: byte 0 bulk limit selector (0: 512 MB, 4n+1: n), byte 1 read-cut seed, then the stream.
write("resp", "ping", b"\x00\x07*1\r\n$4\r\nPING\r\n")
write("resp", "set-get", b"\x00\x03*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n"
      b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n")
write("resp", "inline", b"\x00\x01SET a \"b c\\x41\\n\"\r\nPING\r\nGET 'x' \n\r\n")
write("resp", "bulk-limit", b"\x05\x02*2\r\n$1\r\nx\r\n$2\r\nyy\r\n")
write("resp", "empty-and-binary", b"\x00\x09*0\r\n*-1\r\n*2\r\n$4\r\nECHO\r\n$4\r\na\r\nb\r\n"
      b"*1\r\n$0\r\n\r\n")

# record: the records of the fixture segment, one per seed, then an aborted one and an end mark.
records = []
p = 64
while p + 4 <= len(seg):
    (w,) = struct.unpack_from("<I", seg, p)
    n = w & ((1 << 30) - 1)
    padded = (n + 3) & ~3
    records.append(seg[p:p + padded])
    p += padded
for i, r in enumerate(records):
    write("record", f"fixture-{i}", r)
(w,) = struct.unpack_from("<I", records[0], 0)
write("record", "invalid", struct.pack("<I", w | 1 << 30) + records[0][4:])
write("record", "end", struct.pack("<I", 1 << 31))

# recovery: byte 0 flags, bytes 1-2 split (LE), then file bytes (see check_recovery).
data = seg[64:]
write("recovery", "one-segment", bytes([0x20]) + struct.pack("<H", 0) + data)
write("recovery", "fixture-raw", bytes([0x04]) + struct.pack("<H", 0) + seg)
write("recovery", "two-segments", bytes([0x02]) + struct.pack("<H", 64) + data)
write("recovery", "torn-tail", bytes([0x20]) + struct.pack("<H", 0) + data[:100])
write("recovery", "corrupt-raw", bytes([0x05]) + struct.pack("<H", 0) + corrupt)

"""A small, seeded byte mutator in the style of AFL's havoc stage: flips, interesting values, inserts, deletes,
duplicated and spliced ranges, truncation, and integer fields set to edges. Deterministic for a given
`random.Random`, so a failing input is reproduced from its seed alone."""

from __future__ import annotations

import random
import struct

INTERESTING_8 = (0, 1, 0x7F, 0x80, 0xFF)
INTERESTING_32 = (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x10000, 0xFFFF, 3_000_000_000)
TOKENS = (b"\x00", b"\xff\xff\xff\xff", b"-1", b"1e308", b"NaN", b"[[[[[[[[", b"{\"a\":", b"\r\n", b"\r\n\r\n",
          b"%00", b"%0a", b"../", b"\xc3\x28", b"9" * 40, b"Content-Length: 99999999999\r\n",
          b"Transfer-Encoding: chunked\r\n", b"BYTES", b"FP32", b"\"shape\":[3000000000]")


def _flip(data: bytearray, rng: random.Random) -> None:
    i = rng.randrange(len(data))
    data[i] ^= 1 << rng.randrange(8)


def _byte(data: bytearray, rng: random.Random) -> None:
    data[rng.randrange(len(data))] = rng.choice(INTERESTING_8)


def _word(data: bytearray, rng: random.Random) -> None:
    if len(data) >= 4:
        i = rng.randrange(len(data) - 3)
        data[i : i + 4] = struct.pack(rng.choice((">I", "<I")), rng.choice(INTERESTING_32))


def _insert(data: bytearray, rng: random.Random) -> None:
    i = rng.randrange(len(data) + 1)
    data[i:i] = rng.choice(TOKENS) if rng.random() < 0.5 else rng.randbytes(rng.randrange(1, 16))


def _delete(data: bytearray, rng: random.Random) -> None:
    i = rng.randrange(len(data))
    del data[i : i + rng.randrange(1, 32)]


def _duplicate(data: bytearray, rng: random.Random) -> None:
    i = rng.randrange(len(data))
    chunk = data[i : i + rng.randrange(1, 64)]
    j = rng.randrange(len(data) + 1)
    data[j:j] = chunk * rng.randrange(1, 4)


def _truncate(data: bytearray, rng: random.Random) -> None:
    del data[rng.randrange(len(data)) :]


MUTATIONS = (_flip, _flip, _byte, _word, _insert, _delete, _duplicate, _truncate)


def mutate(seed: bytes, rng: random.Random, max_ops: int = 6, max_size: int = 1 << 20) -> bytes:
    """1..max_ops stacked mutations of `seed`; an empty seed grows random bytes. Never longer than max_size."""
    data = bytearray(seed) or bytearray(rng.randbytes(rng.randrange(1, 64)))
    for _ in range(rng.randrange(1, max_ops + 1)):
        if not data:
            data += rng.randbytes(rng.randrange(1, 16))
        rng.choice(MUTATIONS)(data, rng)
    return bytes(data[:max_size])


def splice(a: bytes, b: bytes, rng: random.Random) -> bytes:
    """The head of one seed on the tail of another: mixes valid structure from two messages."""
    if not a or not b:
        return a or b
    return a[: rng.randrange(len(a) + 1)] + b[rng.randrange(len(b)) :]

"""Reading a role's capture directory and searching bytes for key material and plaintext, in the forms a leak takes."""

from __future__ import annotations

import base64
import struct
from collections import Counter
from pathlib import Path

HEADER_SKIP = 64  # a serialized key starts with a constant header: windows are taken after it
WINDOW = 264      # bytes per needle: 33 of the key's 64-bit words (one per key bit), past any chance match


def read_capture(directory: Path) -> list[tuple[str, list[bytes]]]:
    """[(sender, frames)] in the order the role received them (files NNNNN-sender.i)."""
    messages: dict[tuple[int, str], list[tuple[int, bytes]]] = {}
    for path in Path(directory).iterdir():
        stem, index = path.name.rsplit(".", 1)
        number, sender = stem.split("-", 1)
        messages.setdefault((int(number), sender), []).append((int(index), path.read_bytes()))
    return [(sender, [b for _, b in sorted(frames)]) for (_, sender), frames in sorted(messages.items())]


def type_counts(captured: list[tuple[str, list[bytes]]]) -> Counter:
    """Message types received, counted (frame 1 is the type, SPEC §3)."""
    return Counter(frames[1].decode("ascii", "replace") for _, frames in captured if len(frames) > 1)


def key_needles(secret: bytes) -> list[bytes]:
    """Windows of a secret key past its header, raw, as hex (both cases) and as base64 at the key's own alignment."""
    if len(secret) < HEADER_SKIP + WINDOW:
        raise ValueError(f"a {len(secret)}-byte key is too short to hold key material past its header")
    needles = []
    step = max(WINDOW, (len(secret) - HEADER_SKIP) // 16) // 3 * 3
    for start in range(HEADER_SKIP - HEADER_SKIP % 3, len(secret) - WINDOW, step):
        window = secret[start:start + WINDOW]
        needles += [window, window.hex().encode(), window.hex().upper().encode(), base64.b64encode(window)]
    return needles


def key_bits(secret: bytes) -> list[int]:
    """The key's bits: the run of 64-bit little-endian words that are 0 or 1 at the end of the blob."""
    bits = []
    end = len(secret)
    while end >= 8 and struct.unpack("<Q", secret[end - 8:end])[0] in (0, 1):
        bits.append(secret[end - 8])
        end -= 8
    return bits[::-1]


def packed_key_needles(secret: bytes, window_bits: int = 128) -> list[bytes]:
    """The key's bits packed eight to a byte (either bit order), in windows: a leak that re-encodes the key."""
    bits = key_bits(secret)
    if len(bits) < 2 * window_bits:
        raise ValueError(f"found only {len(bits)} key bits")
    needles = []
    for order in (bits, [b for i in range(0, len(bits) - 7, 8) for b in bits[i:i + 8][::-1]]):
        packed = bytes(int("".join(map(str, order[i:i + 8])), 2) for i in range(0, len(order) - 7, 8))
        needles += [packed[i:i + window_bits // 8] for i in range(0, len(packed) - window_bits // 8, window_bits // 8)]
    return needles


def number_needles(value: float) -> list[bytes]:
    """A number as text and as the little-endian float64 a preprocessed column would be sent as."""
    return [repr(float(value)).encode(), struct.pack("<d", value)]


def found(needles: list[bytes], haystack: bytes) -> list[bytes]:
    return [n for n in needles if n in haystack]

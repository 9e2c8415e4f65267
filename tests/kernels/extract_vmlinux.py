#!/usr/bin/env python3
"""extract_vmlinux.py BZIMAGE OUT -- the uncompressed ELF kernel inside a bzImage.

qemu boots an ELF vmlinux directly through its PVH entry point, which skips the
bzImage decompressor: under TCG that decompressor alone costs several seconds.
The payload is found by its compression magic and kept only if it decompresses
to an ELF image (the magic bytes can also occur by chance).
"""

from __future__ import annotations

import lzma
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

ELF_MAGIC = b"\x7fELF"


def _xz(data: bytes) -> bytes:
    return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)


def _gzip(data: bytes) -> bytes:
    return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)


def _with_tool(*command: str):
    def decompress(data: bytes) -> bytes:
        if shutil.which(command[0]) is None:
            return b""
        # trailing bytes after the stream make these tools complain; their output is still whole
        return subprocess.run(command, input=data, capture_output=True).stdout
    return decompress


# magic -> decompressor; lz4 here is the kernel's legacy lz4 frame
FORMATS = (
    (b"\xfd7zXZ\x00", _xz),
    (b"\x1f\x8b\x08", _gzip),
    (b"\x28\xb5\x2f\xfd", _with_tool("zstd", "-dcq")),
    (b"\x02\x21\x4c\x18", _with_tool("lz4", "-dcq")),
)


def extract(image: bytes) -> bytes | None:
    for magic, decompress in FORMATS:
        start = image.find(magic)
        while start >= 0:
            try:
                payload = decompress(image[start:])
            except (lzma.LZMAError, zlib.error, EOFError):
                payload = b""
            if payload.startswith(ELF_MAGIC):
                return payload
            start = image.find(magic, start + 1)
    return None


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: extract_vmlinux.py BZIMAGE OUT", file=sys.stderr)
        return 2
    payload = extract(Path(argv[1]).read_bytes())
    if payload is None:
        print(f"extract_vmlinux.py: no ELF kernel found in {argv[1]}", file=sys.stderr)
        return 1
    out = Path(argv[2])
    partial = out.with_suffix(".partial")
    partial.write_bytes(payload)
    partial.rename(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

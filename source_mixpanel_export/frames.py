"""Length-prefixed messages over one end of a pipe: how the main process and its workers talk.

multiprocessing.connection does the same (with a 4-byte header), but importing it adds ~3 MB to every
worker's RSS (sockets, selectors and more that a pipe does not need), and the workers' memory counts
against the connector's. The methods have its names, so either works where the other is expected.
"""

from __future__ import annotations

import os
import struct

_HEADER = struct.Struct("!Q")  # the message's length in bytes


class Frames:
    """Sends or receives whole messages on a pipe's file descriptor, which it owns."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def send_bytes(self, data: bytes) -> None:
        """Write one message (blocks while the pipe is full); OSError (EPIPE) once the reader is gone."""
        parts = [memoryview(_HEADER.pack(len(data))), memoryview(data)]
        while parts:
            written = os.writev(self._fd, parts)
            while parts and written >= len(parts[0]):
                written -= len(parts[0])
                parts.pop(0)
            if parts and written:
                parts[0] = parts[0][written:]

    def recv_bytes(self) -> bytes:
        """Read one message; EOFError when the writer has closed its end between messages."""
        header = self._read(_HEADER.size, at_start=True)
        return self._read(_HEADER.unpack(header)[0], at_start=False)

    def close(self) -> None:
        """Close the descriptor (once; closing again does nothing)."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def _read(self, size: int, at_start: bool) -> bytes:
        chunks = []
        left = size
        while left:
            chunk = os.read(self._fd, left)
            if not chunk:
                if at_start and left == size:
                    raise EOFError("the other end closed the pipe")
                raise EOFError("the pipe closed in the middle of a message")
            chunks.append(chunk)
            left -= len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

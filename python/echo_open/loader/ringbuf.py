"""BPF ring buffers, drained a batch at a time.

libbpf calls a C callback (compiled into the extension) per record; it copies
the record into buffers this class owns and ends libbpf's loop once they are
full. Python then sees one batch per call, never one call per record.
"""

from __future__ import annotations

import errno
import mmap
import select
import struct
from array import array
from collections.abc import Iterator, Sequence

from ._binding import ffi, lib
from ._owned import Owned
from .errors import BPFError, check
from .maps import RINGBUF_TYPE, Map

# a ring position: an unsigned long at the start of its page
_POSITION = struct.Struct("@L")


class RecordBatch:
    """Records drained in one call.

    Each record's first ``head_size`` bytes are in ``heads`` at a fixed stride
    (zero-padded if the record was shorter); the rest, its tail, is in
    ``tails``, one after the other, ``tail_sizes[i]`` bytes for record i
    (an ``array('I')``: C code can take all three buffers as they are).
    """

    __slots__ = ("head_size", "heads", "tail_sizes", "tails")

    def __init__(self, head_size: int, heads: bytes, tails: bytes, tail_sizes: array) -> None:
        self.head_size = head_size
        self.heads = heads
        self.tails = tails
        self.tail_sizes = tail_sizes

    def __len__(self) -> int:
        return len(self.tail_sizes)

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        """(head, tail) per record; decoders of high rates slice ``heads`` themselves."""
        offset = 0
        size = self.head_size
        for i, tail_size in enumerate(self.tail_sizes):
            yield (self.heads[i * size:(i + 1) * size],
                   self.tails[offset:offset + tail_size])
            offset += tail_size


class RingBuffer(Owned):
    """A consumer of one or more BPF_MAP_TYPE_RINGBUF maps.

    ``poll(timeout)`` waits up to ``timeout`` seconds for a wake-up and returns a
    batch (possibly empty); ``consume()`` takes what is there without waiting;
    ``fileno()`` is an epoll fd for event loops, readable after a wake-up until
    the next ``poll`` or ``consume``. A producer that writes with
    BPF_RB_NO_WAKEUP is picked up by ``poll`` when its timeout expires.

    The wait is edge-triggered: libbpf's own epoll (level-triggered) reports a
    ring ready whenever it holds any data, so under a steady stream every poll
    returned at once with a record or two, and the per-batch cost was paid per
    record. Here poll sleeps until the producer wakes it (or the timeout), and
    returns at once only while a full batch left more behind.
    """

    def __init__(self, maps: Map | Sequence[Map], *, head_size: int, max_tail: int,
                 batch_records: int = 8192, batch_bytes: int = 8 << 20) -> None:
        maps = [maps] if isinstance(maps, Map) else list(maps)
        if not maps:
            raise ValueError("RingBuffer needs at least one map")
        for bpf_map in maps:
            if bpf_map.type != RINGBUF_TYPE:
                raise ValueError(f"map {bpf_map.name} is not a ring buffer")
        if batch_records < 1:
            # the C callback stores a record before it checks for room
            raise ValueError("batch_records must be at least 1")
        if head_size < 0 or max_tail < 0:
            raise ValueError("head_size and max_tail cannot be negative")
        if batch_bytes < max_tail:
            raise ValueError("batch_bytes must hold at least one record's tail")
        self.head_size = head_size
        self._heads = ffi.new("char[]", head_size * batch_records)
        self._tails = ffi.new("char[]", batch_bytes)
        self._tail_sizes = ffi.new("uint32_t[]", batch_records)
        batch = ffi.new("struct ldr_batch *")
        batch.heads = self._heads
        batch.tails = self._tails
        batch.tail_sizes = self._tail_sizes
        batch.head_size = head_size
        batch.max_records = batch_records
        batch.tail_capacity = batch_bytes
        batch.max_tail = max_tail
        self._batch = batch
        self._maps = maps  # the maps' object must outlive the ring
        self._more = False  # the last consume stopped at a full batch
        self._positions: list[tuple[mmap.mmap, mmap.mmap]] | None = None  # pending_bytes
        self._epoll = select.epoll()
        for bpf_map in maps:
            self._epoll.register(bpf_map.fd, select.EPOLLIN | select.EPOLLET)
        ptr = lib.ring_buffer__new(maps[0].fd, lib.ldr_batch_collect, batch, ffi.NULL)
        if ptr == ffi.NULL:
            raise BPFError(ffi.errno, f"ring_buffer__new({maps[0].name})")
        self._ptr = ptr
        try:
            for bpf_map in maps[1:]:
                check(lib.ring_buffer__add(ptr, bpf_map.fd, lib.ldr_batch_collect, batch),
                      f"ring_buffer__add({bpf_map.name})")
        except BPFError:
            self.close()
            raise

    @property
    def oversized(self) -> int:
        """Records whose tail did not fit in a batch and were cut."""
        return self._batch.oversized

    def pending_bytes(self) -> int:
        """Bytes written by the producers and not consumed yet, over all the rings.

        Read from the rings' own consumer and producer position pages (the kernel's
        layout: the consumer page at offset 0, the producer page after it, each
        starting with its position), mapped read-only: no syscall per call."""
        self._live()
        if self._positions is None:
            page = mmap.PAGESIZE
            self._positions = [
                (mmap.mmap(m.fd, page, mmap.MAP_SHARED, mmap.PROT_READ, offset=0),
                 mmap.mmap(m.fd, page, mmap.MAP_SHARED, mmap.PROT_READ, offset=page))
                for m in self._maps]
        pending = 0
        for consumer, producer in self._positions:
            # the producer's first: the consumer can only be behind it
            produced = _POSITION.unpack_from(producer)[0]
            consumed = _POSITION.unpack_from(consumer)[0]
            pending += max(0, produced - consumed)
        return pending

    def fileno(self) -> int:
        self._live()
        return self._epoll.fileno()

    def _describe(self) -> str:
        return "ring buffer"

    def poll(self, timeout: float | None = None) -> RecordBatch:
        """Wait up to ``timeout`` seconds (None: until woken) and drain one batch."""
        ptr = self._live()
        if self._batch.count:
            return self._take()
        if self._more:
            self._epoll.poll(0)  # no waiting: records are there; just clear an edge
        else:
            # a signal whose handler returns does not end the wait early (PEP 475)
            self._epoll.poll(-1 if timeout is None else max(0.0, timeout))
        # records written without a wake-up are taken here too
        return self._consume(ptr)

    def consume(self) -> RecordBatch:
        """Drain one batch of what is there now, without waiting."""
        ptr = self._live()
        self._epoll.poll(0)  # fileno() turns readable again only for new wake-ups
        return self._consume(ptr)

    def _consume(self, ptr) -> RecordBatch:
        ret = lib.ring_buffer__consume(ptr)
        self._check(ret, "ring_buffer__consume")
        # -ENOSPC: our callback ended libbpf's loop with records still in the ring
        self._more = ret == -errno.ENOSPC
        return self._take()

    def drain(self) -> Iterator[RecordBatch]:
        """Batches until the rings are empty."""
        while True:
            batch = self.consume()
            if not batch:
                return
            yield batch

    @staticmethod
    def _check(ret: int, operation: str) -> None:
        # -ENOSPC: our callback ended the loop because the batch is full
        if ret < 0 and ret not in (-errno.ENOSPC, -errno.EINTR):
            raise BPFError(-ret, operation)

    def _take(self) -> RecordBatch:
        batch = self._batch
        count = batch.count
        if not count:
            return RecordBatch(self.head_size, b"", b"", array("I"))
        heads = ffi.buffer(self._heads, count * self.head_size)[:]
        tails = ffi.buffer(self._tails, batch.tail_used)[:]
        sizes = array("I")
        sizes.frombytes(ffi.buffer(self._tail_sizes, count * sizes.itemsize))
        batch.count = 0
        batch.tail_used = 0
        return RecordBatch(self.head_size, heads, tails, sizes)

    def _free(self) -> None:
        for pages in self._positions or ():
            for page in pages:
                page.close()
        self._positions = None
        lib.ring_buffer__free(self._ptr)
        self._epoll.close()

    def __enter__(self) -> RingBuffer:
        return self

"""BPF maps: configure before load (size, initial .data/.rodata), use after."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ._binding import ffi, lib, possible_cpus
from .errors import BPFError, check

if TYPE_CHECKING:
    from .object import BPFObject

# enum bpf_map_type, as libbpf's headers number it: the types whose values are per CPU
PERCPU_TYPES = frozenset({lib.BPF_MAP_TYPE_PERCPU_HASH, lib.BPF_MAP_TYPE_PERCPU_ARRAY,
                          lib.BPF_MAP_TYPE_LRU_PERCPU_HASH,
                          lib.BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE})
RINGBUF_TYPE = lib.BPF_MAP_TYPE_RINGBUF

BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2

Bytes = bytes | bytearray | memoryview


class Map:
    """A map of a BPF object. Keys and values are bytes of the map's sizes.

    Per-CPU maps return a list with one value per possible CPU.
    """

    def __init__(self, obj: BPFObject, ptr) -> None:
        self._obj = obj
        self._ptr = ptr
        self.name = ffi.string(lib.bpf_map__name(ptr)).decode()
        self.type = lib.bpf_map__type(ptr)
        self.key_size = lib.bpf_map__key_size(ptr)
        self.value_size = lib.bpf_map__value_size(ptr)

    def _handle(self):
        # libbpf frees its maps with the object: never hand it a stale pointer
        self._obj._live()
        return self._ptr

    @property
    def percpu(self) -> bool:
        return self.type in PERCPU_TYPES

    @property
    def max_entries(self) -> int:
        return lib.bpf_map__max_entries(self._handle())

    @max_entries.setter
    def max_entries(self, value: int) -> None:
        check(lib.bpf_map__set_max_entries(self._handle(), value),
              f"bpf_map__set_max_entries({self.name}, {value})")

    @property
    def fd(self) -> int:
        return check(lib.bpf_map__fd(self._handle()), f"bpf_map__fd({self.name})")

    def initial_value(self) -> memoryview:
        """The writable initial contents of a .data/.rodata/.bss map, before load.

        The view is over a copy that ``load()`` hands to libbpf, never over
        libbpf's own memory (freed on close, frozen on load); ``load()``
        releases it, so a write that could no longer take effect raises.
        """
        if self._obj.loaded:
            raise ValueError(f"map {self.name}: initial value is fixed once loaded")
        size = ffi.new("size_t *")
        ptr = lib.bpf_map__initial_value(self._handle(), size)
        if ptr == ffi.NULL:
            raise BPFError(ffi.errno or 22, f"bpf_map__initial_value({self.name})")
        return self._obj._stage(self, ffi.buffer(ffi.cast("char *", ptr), size[0]))

    # ---- element access (after load)

    def int_key(self, key: int) -> bytes:
        """An integer as this map's key: its key size, the machine's byte order."""
        return key.to_bytes(self.key_size, sys.byteorder)

    def int_value(self, value: int) -> bytes:
        return value.to_bytes(self.value_size, sys.byteorder)

    def as_int(self, value: bytes) -> int:
        """A value of this map read as an unsigned integer."""
        return int.from_bytes(value[:self.value_size], sys.byteorder)

    def key_as_int(self, key: bytes) -> int:
        """A key of this map read as an unsigned integer."""
        return int.from_bytes(key[:self.key_size], sys.byteorder)

    def _key(self, key: Bytes):
        if len(key) != self.key_size:
            raise ValueError(f"map {self.name}: key is {len(key)} bytes, not {self.key_size}")
        return ffi.from_buffer(key)

    def _value_stride(self) -> int:
        return (self.value_size + 7) & ~7

    def lookup(self, key: Bytes) -> bytes | list[bytes] | None:
        """The value at ``key`` (per CPU: a list), or None if there is none."""
        size = possible_cpus() * self._value_stride() if self.percpu else self.value_size
        value = ffi.new("char[]", size)
        ret = lib.bpf_map_lookup_elem(self.fd, self._key(key), value)
        if ret == -2:  # ENOENT
            return None
        check(ret, f"bpf_map_lookup_elem({self.name})")
        raw = ffi.buffer(value)[:]
        if not self.percpu:
            return raw
        stride = self._value_stride()
        return [raw[i * stride:i * stride + self.value_size] for i in range(possible_cpus())]

    def update(self, key: Bytes, value: Bytes | list[Bytes], flags: int = BPF_ANY) -> None:
        """Set ``key`` to ``value``; for per-CPU maps, ``value`` is one per possible CPU."""
        if self.percpu:
            values = list(value) if isinstance(value, list) else [value] * possible_cpus()
            if len(values) != possible_cpus():
                raise ValueError(f"map {self.name}: need {possible_cpus()} per-CPU values")
            stride = self._value_stride()
            raw = bytearray(stride * len(values))
            for i, item in enumerate(values):
                self._check_value(item)
                raw[i * stride:i * stride + self.value_size] = item
        else:
            self._check_value(value)
            raw = value
        check(lib.bpf_map_update_elem(self.fd, self._key(key), ffi.from_buffer(raw), flags),
              f"bpf_map_update_elem({self.name})")

    def _check_value(self, value: Bytes) -> None:
        if len(value) != self.value_size:
            raise ValueError(f"map {self.name}: value is {len(value)} bytes, not {self.value_size}")

    def delete(self, key: Bytes) -> bool:
        """Delete ``key``; False if it was not there."""
        ret = lib.bpf_map_delete_elem(self.fd, self._key(key))
        if ret == -2:
            return False
        check(ret, f"bpf_map_delete_elem({self.name})")
        return True

    def keys(self) -> Iterator[bytes]:
        key = ffi.new("char[]", self.key_size)
        ret = lib.bpf_map_get_next_key(self.fd, ffi.NULL, key)
        while ret == 0:
            current = ffi.buffer(key)[:]
            yield current
            ret = lib.bpf_map_get_next_key(self.fd, ffi.from_buffer(current), key)
        if ret != -2:
            check(ret, f"bpf_map_get_next_key({self.name})")

    def items(self) -> Iterator[tuple[bytes, bytes | list[bytes]]]:
        for key in self.keys():
            value = self.lookup(key)
            if value is not None:
                yield key, value

    def __repr__(self) -> str:
        return f"<Map {self.name} type={self.type} key={self.key_size} value={self.value_size}>"

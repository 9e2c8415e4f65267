"""BPF objects, programs and links: open -> configure -> load -> attach."""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Iterator
from pathlib import Path

from ._binding import capture_log, ffi, lib
from ._owned import Owned
from .errors import BPFError, LoadError, check
from .maps import Map


class Link:
    """An attached program. Detaches on ``close()``, on leaving ``with``, or when collected."""

    def __init__(self, ptr, program_name: str, owner: object = None) -> None:
        self._ptr = ptr
        self.program_name = program_name
        # The object it came from lives while the link is attached: a BPFObject
        # always sits in a reference cycle, and when the cycle collector takes it,
        # its weak set of links is already emptied, so its __del__ cannot detach them.
        self._owner = owner
        # the finalizer holds only the pointer, so a forgotten link still detaches
        self._finalizer = weakref.finalize(self, lib.bpf_link__destroy, ptr)

    @property
    def fd(self) -> int:
        self._check_open()
        return lib.bpf_link__fd(self._ptr)

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError(f"link of {self.program_name} is closed")

    def close(self) -> None:
        self._finalizer()
        self._owner = None

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={lib.bpf_link__fd(self._ptr)}"
        return f"<Link {self.program_name} {state}>"


def tracepoint_of_section(section: str) -> tuple[str, str] | None:
    """(category, event) of a program libbpf attaches through tracefs: section
    ``tracepoint/CATEGORY/EVENT`` or ``tp/CATEGORY/EVENT`` (a leading ``?``: not loaded
    unless asked); None for any other (a bare ``tracepoint`` is a tail-call target)."""
    parts = section.lstrip("?").split("/")
    if parts[0] in ("tracepoint", "tp") and len(parts) == 3:
        return parts[1], parts[2]
    return None


class Program:
    """A program in an object. Autoload can be turned off before load."""

    def __init__(self, obj: BPFObject, ptr) -> None:
        self._obj = obj
        self._ptr = ptr
        self.name = ffi.string(lib.bpf_program__name(ptr)).decode()
        self.section = ffi.string(lib.bpf_program__section_name(ptr)).decode()

    def _handle(self):
        # libbpf frees its programs with the object: never hand it a stale pointer
        self._obj._live()
        return self._ptr

    @property
    def tracepoint(self) -> tuple[str, str] | None:
        """(category, event) if tracefs attaches it (see tracepoint_of_section)."""
        return tracepoint_of_section(self.section)

    @property
    def autoload(self) -> bool:
        return bool(lib.bpf_program__autoload(self._handle()))

    @autoload.setter
    def autoload(self, value: bool) -> None:
        check(lib.bpf_program__set_autoload(self._handle(), value),
              f"bpf_program__set_autoload({self.name})")

    @property
    def fd(self) -> int:
        return check(lib.bpf_program__fd(self._handle()), f"bpf_program__fd({self.name})")

    def attach(self) -> Link:
        """Attach by section name (tracepoint/..., tp_btf/..., ...)."""
        ptr = lib.bpf_program__attach(self._handle())
        if ptr == ffi.NULL:
            raise BPFError(ffi.errno, f"attach {self.name} ({self.section})")
        return self._obj._adopt(Link(ptr, self.name, owner=self._obj))

    def __repr__(self) -> str:
        return f"<Program {self.name} {self.section}>"


class BPFObject(Owned):
    """A BPF ELF object. Open it, configure it (maps, .rodata, autoload), load it, attach.

    ``with BPFObject.open(path) as obj: ...`` closes the object (and every link
    still attached through it) on exit.
    """

    def __init__(self, ptr, name: str, keepalive: object = None) -> None:
        self._ptr = ptr
        self.name = name
        self._keepalive = keepalive  # open_mem: libbpf may refer to the buffer until load
        self._links: weakref.WeakSet[Link] = weakref.WeakSet()
        self._loaded = False
        # .data/.rodata/.bss contents written before load: map name -> our copy, and the
        # views handed out over it (released at load: a later write could not take effect)
        self._staged: dict[str, bytearray] = {}
        self._staged_views: list[memoryview] = []
        self.programs: dict[str, Program] = {}
        prog = lib.bpf_object__next_program(ptr, ffi.NULL)
        while prog != ffi.NULL:
            program = Program(self, prog)
            self.programs[program.name] = program
            prog = lib.bpf_object__next_program(ptr, prog)
        self.maps: dict[str, Map] = {}
        map_ptr = lib.bpf_object__next_map(ptr, ffi.NULL)
        while map_ptr != ffi.NULL:
            bpf_map = Map(self, map_ptr)
            self.maps[bpf_map.name] = bpf_map
            map_ptr = lib.bpf_object__next_map(ptr, map_ptr)

    @classmethod
    def open(cls, path: str | os.PathLike) -> BPFObject:
        path = Path(path)
        with capture_log() as log:
            ptr = lib.bpf_object__open_file(os.fsencode(path), ffi.NULL)
        if ptr == ffi.NULL:
            raise BPFError(ffi.errno, f"bpf_object__open_file({path})", "".join(log))
        return cls(ptr, path.name)

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "<bytes>") -> BPFObject:
        buffer = ffi.from_buffer(data)
        # libbpf names the object (and its .rodata/.bss maps) after this, not an address
        object_name = ffi.new("char[]", os.fsencode(name))
        opts = ffi.new("struct bpf_object_open_opts *")
        opts.sz = ffi.sizeof("struct bpf_object_open_opts")
        opts.object_name = object_name
        with capture_log() as log:
            ptr = lib.bpf_object__open_mem(buffer, len(data), opts)
        if ptr == ffi.NULL:
            raise BPFError(ffi.errno, f"bpf_object__open_mem({name})", "".join(log))
        return cls(ptr, name, keepalive=(data, buffer))

    def _describe(self) -> str:
        return f"BPF object {self.name}"

    @property
    def loaded(self) -> bool:
        return self._loaded

    # ---- what its programs and maps ask of it

    def _adopt(self, link: Link) -> Link:
        """A link made from one of its programs: closed with the object."""
        self._links.add(link)
        return link

    def _stage(self, bpf_map: Map, initial: bytes) -> memoryview:
        """A writable view of the map's initial contents until load (a copy of
        ``initial``, libbpf's own, made on first use); load() hands it to libbpf."""
        if self._loaded:
            raise ValueError(f"map {bpf_map.name}: initial value is fixed once loaded")
        staged = self._staged.setdefault(bpf_map.name, bytearray(initial))
        view = memoryview(staged)
        self._staged_views.append(view)
        return view

    def _commit_staged(self) -> None:
        for name, staged in self._staged.items():
            bpf_map = self.maps[name]
            check(lib.bpf_map__set_initial_value(bpf_map._handle(), ffi.from_buffer(staged),
                                                 len(staged)),
                  f"bpf_map__set_initial_value({name})")

    def _release_staged(self) -> None:
        for view in self._staged_views:
            # BufferError: exported further; it still points at our copy only
            with contextlib.suppress(BufferError):
                view.release()
        self._staged_views.clear()
        self._staged.clear()

    def program(self, name: str) -> Program:
        try:
            return self.programs[name]
        except KeyError:
            raise KeyError(f"no program {name!r} in {self.name}") from None

    def map(self, name: str) -> Map:
        """A map by name; ``.rodata``, ``.bss``, ``.data`` also by their section name.

        libbpf names those after the object (``myprog.rodata``, cut to 15 characters).
        """
        found = self.maps.get(name)
        if found is None and name.startswith("."):
            ptr = lib.bpf_object__find_map_by_name(self._live(), name.encode())
            if ptr != ffi.NULL:
                found = next((m for m in self.maps.values() if m._ptr == ptr), None)
        if found is None:
            raise KeyError(f"no map {name!r} in {self.name}")
        return found

    def load(self) -> None:
        """Load into the kernel; a failure raises LoadError holding the verifier log."""
        ptr = self._live()
        try:
            self._commit_staged()
            with capture_log() as log:
                ret = lib.bpf_object__load(ptr)
        finally:
            # libbpf never loads an object twice, even after a failure
            self._release_staged()
        if ret < 0:
            raise LoadError(-ret, f"bpf_object__load({self.name})", "".join(log))
        self._loaded = True

    def attach_all(self) -> list[Link]:
        """Attach every program that is set to load; detach them all if one fails."""
        links: list[Link] = []
        try:
            for program in self.programs.values():
                if program.autoload:
                    links.append(program.attach())
        except BaseException:
            for link in links:
                link.close()
            raise
        return links

    def links(self) -> Iterator[Link]:
        return (link for link in list(self._links) if not link.closed)

    def _free(self) -> None:
        for link in list(self._links):
            link.close()
        self._release_staged()
        if self._loaded:
            # the kernel empties a program array asynchronously, some time after its last
            # fd is closed: emptied here, the programs it holds are gone when close returns
            for bpf_map in self.maps.values():
                if bpf_map.type == lib.BPF_MAP_TYPE_PROG_ARRAY:
                    for key in list(bpf_map.keys()):
                        bpf_map.delete(key)
        lib.bpf_object__close(self._ptr)
        self._keepalive = None

    def __enter__(self) -> BPFObject:
        return self

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("loaded" if self.loaded else "opened")
        return f"<BPFObject {self.name} {state}>"

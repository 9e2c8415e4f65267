"""The life cycle shared by everything that owns a libbpf pointer."""

from __future__ import annotations

from typing import Any


class Owned:
    """Owns ``_ptr``: freed once by ``close()``, at the end of ``with``, or when collected."""

    _ptr: Any = None

    def _free(self) -> None:
        """Release ``self._ptr`` (and what hangs on it); called once, with _ptr set."""
        raise NotImplementedError

    def _describe(self) -> str:
        """What this is, for messages: ``BPF object x.bpf.o``."""
        return type(self).__name__

    def _live(self) -> Any:
        """The pointer, for a libbpf call; never a freed one: the one closed check."""
        if self._ptr is None:
            raise ValueError(f"{self._describe()} is closed")
        return self._ptr

    def close(self) -> None:
        if self._ptr is not None:
            self._free()
            self._ptr = None

    @property
    def closed(self) -> bool:
        return self._ptr is None

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_ptr", None) is not None:
            self.close()

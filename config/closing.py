"""``with`` support for the objects that own a connection, a session pool or a token."""

from __future__ import annotations

from typing import Self


class Closing:
    """Mixin: ``with obj:`` calls ``obj.close()`` at the end, whatever happened inside."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

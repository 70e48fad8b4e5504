"""Local data files appear whole: written under a hidden temporary name, renamed into place.

spendstream.duckdb's views glob each table's ``data/**/*.parquet`` (views.py); a data file
still being written must never match, or a query racing a commit would open half a file.
pyiceberg writes straight to the final path, so for local storage the writer gets this
FileIO instead: each output goes to ``.<name>.<random>.tmp`` in the same directory and is
renamed over the final name when closed (an atomic rename). On S3 an object only appears
once its upload completes, so nothing is needed there.
"""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["StagedLocalFileIO"]


class _RenameOnClose(io.FileIO):
    def __init__(self, tmp: Path, final: Path) -> None:
        super().__init__(tmp, "wb")
        self._tmp, self._final = tmp, final
        self._failed = False

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        if self._failed:
            self._tmp.unlink(missing_ok=True)
        else:
            os.replace(self._tmp, self._final)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._failed = exc_type is not None
        self.close()


class _StagedOutputFile:
    def __init__(self, location: str, path: Path) -> None:
        self.location = location
        self._path = path

    def create(self, overwrite: bool = False) -> _RenameOnClose:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_name(f".{self._path.name}.{uuid.uuid4().hex[:8]}.tmp")
        return _RenameOnClose(tmp, self._path)

    def exists(self) -> bool:
        return self._path.exists()

    def __len__(self) -> int:
        return self._path.stat().st_size


class StagedLocalFileIO:
    """The part of pyiceberg's FileIO its data-file writer uses, staging each file."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def new_output(self, location: str) -> _StagedOutputFile:
        from spendstream.warehouse.tables import Storage

        return _StagedOutputFile(location, Path(Storage.to_fs_path(location)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

"""Publishing an output file atomically: the one place that decides how an output appears.

Every writer of embq (the store writer behind ``save``, ``StoreWriter`` and ``compress``, and
``export``) writes into a temporary file in the destination's own directory, then calls
:func:`publish`, which

1. flushes the temporary file to disk (``fsync``), so a crash right after the rename cannot
   leave an empty or partial file under the final name;
2. moves it into place: ``os.replace`` when overwriting is allowed; otherwise ``os.link``,
   which fails if the destination exists, so a file that appeared since the writer started is
   never replaced, then ``unlink`` of the temporary name.  Where hard links are not supported
   it falls back to ``rename`` after checking again that the destination is still absent;
3. flushes the directory entry (``fsync`` of the directory).

:func:`check_destination` is the early check each writer runs before doing any work, so a
mistake in the output path is reported at once rather than after a long computation.

Errors speak in API terms (``overwrite=True``); :class:`embq._errors.OutputExistsError`
carries the path and the reason so the command line can word its own message.
"""

from __future__ import annotations

import errno
import os
from typing import IO

from embq._errors import OutputExistsError

__all__ = ["AtomicFile", "check_destination", "publish"]


def check_destination(path: str | os.PathLike, overwrite: bool,
                      example: str = "vectors.h5") -> None:
    """Refuse an output path that cannot be written, before any work is done.

    Parameters
    ----------
    path : str or os.PathLike
        The output file.
    overwrite : bool
        Whether an existing file may be replaced.
    example : str
        A file name the message suggests when ``path`` is a directory.

    Raises
    ------
    FileNotFoundError
        The directory of ``path`` does not exist.
    IsADirectoryError
        ``path`` is a directory (said before "exists": ``overwrite=True`` would not help).
    OutputExistsError
        ``path`` exists (as anything, a dangling symbolic link included) and ``overwrite`` is
        false.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            errno.ENOENT, f"the output directory {directory!r} does not exist", path)
    if os.path.isdir(path):
        raise IsADirectoryError(
            errno.EISDIR, "is a directory; expected the path of a file to write, such as "
            f"{os.path.join(path, example)}", path)
    if not overwrite and os.path.lexists(path):
        raise OutputExistsError(path)


def _fsync_path(path: str, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some file systems cannot fsync a directory (EINVAL); the rename itself is done.
        if not directory or exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def publish(tmp: str, path: str | os.PathLike, *, overwrite: bool) -> None:
    """Move the finished temporary file ``tmp`` to ``path`` durably and atomically.

    ``tmp`` must be in the same file system as ``path`` (the writers create it in the same
    directory).  On failure ``tmp`` is left for the caller to remove, and ``path`` is untouched.

    Raises
    ------
    OutputExistsError
        ``overwrite`` is false and ``path`` exists now (it appeared after
        :func:`check_destination`).
    """
    path = os.fspath(path)
    _fsync_path(tmp)
    if overwrite:
        os.replace(tmp, path)
    else:
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise OutputExistsError(path, appeared=True) from None
        except OSError:
            # No hard links here (some network and FUSE file systems): a rename after a fresh
            # check.  The window between the two is what remains of the race on such systems.
            if os.path.lexists(path):
                raise OutputExistsError(path, appeared=True) from None
            os.rename(tmp, path)
        else:
            os.unlink(tmp)
    _fsync_path(os.path.dirname(os.path.abspath(path)), directory=True)


class AtomicFile:
    """A binary temporary file next to ``path``, published there by :meth:`commit`.

    The destination is checked at once (:func:`check_destination`, with ``example`` as the
    file name it suggests if ``path`` is a directory).  ``fh`` is the buffered
    file to write.  :meth:`abort` (idempotent) removes the temporary file; after a successful
    :meth:`commit` it does nothing.
    """

    def __init__(self, path: str | os.PathLike, overwrite: bool,
                 example: str = "vectors.txt") -> None:
        self.path = os.fspath(path)
        self.overwrite = overwrite
        check_destination(self.path, overwrite, example)
        import tempfile  # only writers need it: kept out of the import of every reader

        directory = os.path.dirname(os.path.abspath(self.path))
        fd, self.tmp = tempfile.mkstemp(prefix=f".{os.path.basename(self.path)}.",
                                        suffix=".embq-tmp", dir=directory)
        try:
            # mkstemp creates 0600; give the result the permissions a plain open() would.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.tmp, 0o666 & ~umask)
            self.fh: IO[bytes] = os.fdopen(fd, "wb", buffering=1 << 20)
        except BaseException:  # including an interrupt: leave no temporary file behind
            if hasattr(self, "fh"):
                self.fh.close()
            else:
                os.close(fd)
            os.unlink(self.tmp)
            raise
        self._done = False

    def commit(self) -> None:
        """Close the file and publish it at ``path`` (see :func:`publish`)."""
        self.fh.close()
        try:
            publish(self.tmp, self.path, overwrite=self.overwrite)
        except BaseException:
            self.abort()
            raise
        self._done = True

    def abort(self) -> None:
        """Discard the temporary file; ``path`` is left as it was.  Safe to repeat."""
        if self._done:
            return
        try:
            self.fh.close()
        finally:
            self._done = True
            try:
                os.unlink(self.tmp)
            except FileNotFoundError:
                pass

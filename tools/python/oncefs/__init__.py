"""oncefs from Python: the forty lines every job writes by hand, once.

The module mirrors the filesystem and adds nothing to it: a claim is an
``O_EXCL`` create of ``keys/KEY`` held open, its finalize a write into it,
a step a ``.part`` file renamed into place, an input a line written to
``input.fingerprint`` and held open.  Errors are the operating system's
(``FileExistsError``, ``OSError`` with the errno the README lists), never
swallowed.  Standard library only.

    import oncefs

    wf = oncefs.Workflow("/mnt/once/nightly-etl")
    wf.set_input({"date": "2026-11-21", "tables": ["a", "b"]})
    with wf.claim("2026-11-21") as c:          # AlreadyDone, InFlight
        rows = extract()                      # an exception: "failed"
        c.result = str(rows)                  # a clean exit: "succeeded"
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import signal
import traceback
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Callable, Optional, Type, TypeVar, Union

__all__ = [
    "AlreadyDone", "Claim", "InFlight", "Key", "OtherRequest", "Step",
    "Workflow", "claim", "fingerprint", "wait",
]

# What a failed finalize keeps of a traceback (the key's events keep 2 KiB).
FAILURE_MAX = 2048
# user.oncefs.original takes up to 1024 bytes; keys/ names up to 255.
NAME_MAX = 255

Data = Union[str, bytes]
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Key:
    """A key as ``cat keys/KEY`` shows it: its status line, then its result."""

    name: str
    status: str         # "in_flight", "succeeded" or "failed"
    generation: int
    result: bytes

    @classmethod
    def parse(cls, name: str, content: bytes) -> "Key":
        line, _, result = content.partition(b"\n")
        status, _, gen = line.decode("ascii", "replace").partition(" ")
        return cls(name, status, int(gen) if gen.isdigit() else 0, result)


class AlreadyDone(FileExistsError):
    """The key is terminal: it succeeded (or failed, under dedup_on=any)."""

    def __init__(self, key: Key):
        super().__init__(errno.EEXIST, "%s before (generation %d)" % (key.status, key.generation),
                         key.name)
        self.key = key
        self.status = key.status
        self.generation = key.generation
        self.result = key.result


class InFlight(FileExistsError):
    """Another holder's claim on the key is still running."""

    def __init__(self, key: Key, holder_pid: int):
        super().__init__(errno.EEXIST, "in flight (generation %d, pid %d)"
                         % (key.generation, holder_pid), key.name)
        self.key = key
        self.generation = key.generation
        self.holder_pid = holder_pid


class OtherRequest(FileExistsError):
    """The key was claimed for another request (Stripe's 422)."""

    def __init__(self, key: Key, theirs: str, ours: str):
        super().__init__(errno.EEXIST, "claimed for another request (%s, not %s)"
                         % (theirs, ours), key.name)
        self.key = key
        self.theirs = theirs
        self.ours = ours


def fingerprint(obj: Any) -> str:
    """The canonical fingerprint of JSON-like input: the SHA-256 of its JSON
    with sorted keys and no whitespace, so the same input always gives the
    same value (and 1 and 1.0 are different inputs)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _request_fingerprint(request: Union[bytes, str, Any]) -> str:
    """bytes and str (as UTF-8) by their bytes, as `once --request` hashes a
    file, so the same payload reads as the same request from both; any
    other value by its canonical JSON (fingerprint())."""
    if isinstance(request, str):
        request = request.encode("utf-8")
    if isinstance(request, (bytes, bytearray, memoryview)):
        return "sha256:" + hashlib.sha256(bytes(request)).hexdigest()
    return "sha256:" + fingerprint(request)


def _getxattr(path_or_fd: Union[str, int], name: str) -> Optional[str]:
    try:
        return os.getxattr(path_or_fd, "user.oncefs." + name).decode("utf-8", "replace")
    except OSError as e:
        if e.errno == errno.ENODATA:
            return None
        raise


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        b = os.read(fd, 1 << 16)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def _bounded(text: str, limit: int) -> bytes:
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return data
    # Keep the end of a traceback: the exception is the last line.
    return b"...\n" + data[len(data) - limit + 4:].decode("utf-8", "ignore").encode()


class Claim:
    """A claim held open.  As a context manager: a clean exit finalizes
    ``succeeded`` with :attr:`result`, an exception ``failed`` with the
    traceback (bounded), and the exception goes on."""

    def __init__(self, path: str, fd: int):
        self.path = path
        self.name = os.path.basename(path)
        self.fd = fd
        self.generation = int(_getxattr(fd, "generation") or 0)
        self.attempt = int(_getxattr(fd, "attempt") or 0)
        # The generation this claim took over (an attempt that crashed,
        # failed or expired); None for a first claim.
        self.previous: Optional[int] = int(_getxattr(fd, "previous") or 0) or None
        self.result: Data = b""
        self.finalized = False

    def finalize(self, status: str, result: Data = b"") -> None:
        """Write ``STATUS GENERATION`` and the result, and close: the commit
        happens at this close, and its errors are raised here."""
        if isinstance(result, str):
            result = result.encode("utf-8")
        data = b"%s %d\n" % (status.encode("ascii"), self.generation) + bytes(result)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
        finally:
            fd, self.fd = self.fd, -1
            self.finalized = True
            os.close(fd)

    def close(self) -> None:
        """Close without a finalize: the claim is abandoned, a retry adopts it."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, kind: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        if self.finalized:
            return
        if exc is None:
            self.finalize("succeeded", self.result)
        elif not isinstance(exc, Exception):
            # Ctrl-C, sys.exit(): stopped, not failed: abandoned, and the
            # next run adopts the key.
            self.close()
        else:
            text = "".join(traceback.format_exception(kind, exc, tb))
            try:
                self.finalize("failed", _bounded(text, FAILURE_MAX))
            except OSError:
                pass            # the job's own exception is what matters


class Step:
    """``steps/NAME``: as a context manager, a file (``steps/NAME.part...``)
    committed as the checkpoint only on a clean exit, never a partial one on
    an exception; as a decorator, a function whose return value is the
    checkpoint, skipped (its checkpoint returned) when it exists."""

    def __init__(self, workflow: "Workflow", name: str, binary: bool = False):
        _check_name("step", name)
        self.workflow = workflow
        self.name = name
        self.binary = binary
        self.path = os.path.join(workflow.path, "steps", name)
        self._part: Optional[str] = None
        self._file: Any = None

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def read(self) -> Data:
        with open(self.path, "rb" if self.binary else "r") as f:
            return f.read()

    def __enter__(self) -> Any:
        # A part file of this runner's own: concurrent runners never share one.
        part = "%s.part.%d.%s" % (self.name[:NAME_MAX - 30], os.getpid(), secrets.token_hex(4))
        self._part = os.path.join(self.workflow.path, "steps", part)
        self._file = open(self._part, "xb" if self.binary else "x")
        return self._file

    def __exit__(self, kind: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        assert self._part is not None
        part, self._part = self._part, None
        try:
            self._file.close()      # the commit of the part: errors raise here
            if exc is None:
                os.rename(part, self.path)
                return
        except BaseException:
            _unlink(part)
            raise
        _unlink(part)

    def __call__(self, fn: F) -> F:
        step = self

        def run(*args: Any, **kw: Any) -> Any:
            if step.exists():
                return step.read()
            value = fn(*args, **kw)
            with Step(step.workflow, step.name, isinstance(value, (bytes, bytearray))) as f:
                f.write(value)
            return value

        run.__name__ = getattr(fn, "__name__", step.name)
        run.__doc__ = fn.__doc__
        return run  # type: ignore[return-value]


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _check_name(what: str, name: str) -> None:
    raw = name.encode("utf-8", "surrogateescape")
    if not raw or len(raw) > NAME_MAX or b"/" in raw or b"\0" in raw or name in (".", ".."):
        raise ValueError("%s name %r: not one file name of 1 to 255 bytes "
                         "(key=..., hash_key=True maps any key to one)" % (what, name))


class Workflow:
    """A workflow directory of a mount.  ``create=True`` makes it (as
    ``mkdir``) when it is missing.  As a context manager, releases the
    input it holds on exit."""

    def __init__(self, path: Union[str, "os.PathLike[str]"], create: bool = False):
        self.path = os.fspath(path)
        self._input_fd = -1
        if create:
            try:
                os.mkdir(self.path)
            except FileExistsError:
                pass

    # ---- keys ----------------------------------------------------------

    def key_path(self, key: str, hash_key: bool = False) -> str:
        if hash_key:
            key = "sha256-" + hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
        _check_name("key", key)
        return os.path.join(self.path, "keys", key)

    def claim(self, key: str, request: Optional[Any] = None, hash_key: bool = False) -> Claim:
        """Claim ``keys/KEY`` (O_EXCL).  Raises :class:`AlreadyDone` for a
        terminal key, :class:`InFlight` while another holder runs,
        :class:`OtherRequest` when ``request`` (bytes or str by their bytes,
        as ``once --request``; other values by their canonical JSON) differs
        from the one the key was claimed for.  ``hash_key`` names
        the key after the SHA-256 of ``key`` and notes ``key`` itself."""
        path = self.key_path(key, hash_key)
        ours = _request_fingerprint(request) if request is not None else None
        while True:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except FileExistsError:
                found = self._existing(path, ours)
                if found is None:
                    continue            # it went free meanwhile: claim again
                raise found from None
            break
        try:
            if hash_key:
                original = key.encode("utf-8", "surrogateescape")
                if len(original) <= 1024:
                    os.setxattr(fd, "user.oncefs.original", original)
            if ours is not None:
                os.setxattr(fd, "user.oncefs.request", ours.encode())
            return Claim(path, fd)
        except BaseException:
            os.close(fd)                # abandoned at once
            raise

    def _existing(self, path: str, ours: Optional[str]) -> Optional[FileExistsError]:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            key = Key.parse(os.path.basename(path), _read_all(fd))
            theirs = _getxattr(fd, "request") if ours is not None else None
            holder = _getxattr(fd, "holder") or "0"
        finally:
            os.close(fd)
        if theirs is not None and theirs != ours:
            return OtherRequest(key, theirs, ours or "")
        if key.status == "in_flight":
            return InFlight(key, int(holder.split()[0]))
        return AlreadyDone(key)

    def read(self, key: str, hash_key: bool = False) -> Optional[Key]:
        """The key as ``cat`` shows it, or None when there is none."""
        path = self.key_path(key, hash_key)
        try:
            with open(path, "rb") as f:
                return Key.parse(os.path.basename(path), f.read())
        except FileNotFoundError:
            return None

    def wait(self, key: str, timeout: Optional[float] = None,
             hash_key: bool = False) -> Optional[Key]:
        """Block until the claim on the key ends (a read of ``wait/KEY``, no
        polling): the terminal key, or None when it is free (claim it).
        ``timeout`` (seconds, main thread only) raises TimeoutError."""
        name = os.path.basename(self.key_path(key, hash_key))
        path = os.path.join(self.path, "wait", name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        old = None

        def expired(signum: int, frame: Any) -> None:
            raise TimeoutError(errno.ETIMEDOUT, "still in flight after %g s" % timeout, path)

        try:
            if timeout is not None:
                old = signal.signal(signal.SIGALRM, expired)
                signal.setitimer(signal.ITIMER_REAL, max(timeout, 1e-6))
            try:
                return Key.parse(name, _read_all(fd))
            except FileNotFoundError:
                return None             # free: abandoned, expired, released
        finally:
            if timeout is not None:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, old)
            os.close(fd)

    # ---- steps and the input -------------------------------------------

    def step(self, name: str, binary: bool = False) -> Step:
        return Step(self, name, binary)

    def set_input(self, obj: Any) -> str:
        """Set ``input.fingerprint`` to the canonical fingerprint of ``obj``
        and hold it until :meth:`release_input` (or the end of a ``with``
        block): meanwhile another input is refused (EBUSY) on every mount,
        so this run's checkpoints all belong to this input.  Raises the
        OSError of the write: EBUSY while another run holds another input,
        or under on_input_change=raise."""
        value = fingerprint(obj)
        line = value.encode() + b"\n"
        if self._input_fd >= 0:
            # Through the file that holds the input: a new file would wait
            # for this one's hold, which ends a moment after its close.
            os.ftruncate(self._input_fd, 0)
            os.pwrite(self._input_fd, line, 0)
            return value
        fd = os.open(os.path.join(self.path, "input.fingerprint"),
                     os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            os.write(fd, line)                      # one line: set, and held
        except BaseException:
            os.close(fd)
            raise
        self._input_fd = fd
        return value

    def release_input(self) -> None:
        if self._input_fd >= 0:
            fd, self._input_fd = self._input_fd, -1
            os.close(fd)

    def close(self) -> None:
        self.release_input()

    def __enter__(self) -> "Workflow":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def claim(workflow_dir: str, key: str, request: Optional[Any] = None,
          hash_key: bool = False) -> Claim:
    """``Workflow(workflow_dir).claim(key, ...)``."""
    return Workflow(workflow_dir).claim(key, request=request, hash_key=hash_key)


def wait(workflow_dir: str, key: str, timeout: Optional[float] = None,
         hash_key: bool = False) -> Optional[Key]:
    """``Workflow(workflow_dir).wait(key, ...)``."""
    return Workflow(workflow_dir).wait(key, timeout=timeout, hash_key=hash_key)

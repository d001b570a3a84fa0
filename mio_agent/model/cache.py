"""The user cache folder and building folders in it atomically, once, across processes."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from platformdirs import user_cache_dir

from mio_agent.exceptions import ModelFilesError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; os.replace still keeps a half-built folder unseen
    fcntl = None  # type: ignore[assignment]

__all__ = ["CACHE_ENV", "build_atomically", "cache_root"]

CACHE_ENV = "MIO_AGENT_CACHE"


def cache_root(cache_dir: Path | None = None) -> Path:
    """`cache_dir`, else $MIO_AGENT_CACHE, else the platform's user cache folder for mio-agent."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path(user_cache_dir("mio-agent"))


@contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    with open(lock_file, "a") as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def build_atomically(target: Path, build: Callable[[Path], object]) -> Path:
    """Return `target`, first building it with `build(temp_folder)` if it does not exist.

    The build writes into a temporary folder beside `target` that is renamed into place when
    complete, so `target` is either absent or whole; a lock file beside it makes a second process
    wait for the first one's build instead of racing it.
    """
    if target.is_dir():
        return target
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with _locked(parent / f".{target.name}.lock"):
            if target.is_dir():
                return target
            # whoever held the lock before finished or died; leftovers of a dead build are garbage
            for stale in parent.glob(f".{target.name}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            temp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
            try:
                build(temp)
                # mkdtemp makes the folder private; the files in it were made with the usual mode
                temp.chmod(0o755)
                os.replace(temp, target)
            except BaseException:
                shutil.rmtree(temp, ignore_errors=True)
                raise
    except OSError as exc:
        raise ModelFilesError(
            f"cannot build {target} ({exc}); make {parent} writable or set ${CACHE_ENV} to a writable folder"
        ) from exc
    return target

"""The native sampling kernels (csrc/sampling_kernels.cpp): build once per machine, load if built.

`midigen kernels build` (run by `make install`) compiles them with this machine's C++
compiler against the installed torch, into a cache folder keyed by the torch version, the
source and the CPU (they are built for this CPU's instruction set). The sampler never
compiles: `load()` only loads a library that is already built, and sampling falls back to
the Python reference path (same controls, same draws up to float rounding, ~1.6x slower on
the seed-size model) where none is.

Where: $MIDIGEN_KERNELS_DIR, else $XDG_CACHE_HOME/midigen/kernels, else ~/.cache/midigen/kernels.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import torch

from midigen.errors import MidigenError

NAME = "midigen_sampling_kernels"
SOURCE = Path(__file__).parent / "csrc" / "sampling_kernels.cpp"
# -ffp-contract=off: a * b + c rounds like the reference's separate multiply and add.
CFLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno"]
CHOICES = ("auto", "native", "python")


def _cpu_fingerprint() -> str:
    """The CPU model and flags (the library is built with -march=native)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return os.uname().machine
    keep = [ln for ln in lines if ln.startswith(("model name", "flags", "Features"))]
    return "\n".join(dict.fromkeys(keep))


@functools.lru_cache(maxsize=1)
def _build_name() -> str:
    """torch version + a hash of it, the source, the flags and the CPU (fixed for a process)."""
    key = "\n".join((torch.__version__, SOURCE.read_text(), " ".join(CFLAGS), _cpu_fingerprint()))
    return f"torch{torch.__version__.replace('+', '_')}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def build_dir() -> Path:
    """Where this torch + source + CPU's library lives."""
    root = os.environ.get("MIDIGEN_KERNELS_DIR")
    if root is None:
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(cache) / "midigen" / "kernels")
    return Path(root) / _build_name()


def library_path() -> Path:
    return build_dir() / f"{NAME}.so"


_loaded = False


def load() -> bool:
    """Load the built library into this process; False (and nothing happens) where it is not built."""
    global _loaded
    if _loaded:
        return True
    path = library_path()
    if not path.exists():
        return False
    try:
        torch.ops.load_library(str(path))
    except (OSError, RuntimeError):  # built for another torch or CPU under the same key: rebuild
        return False
    _loaded = True
    return True


def compiler() -> str | None:
    """The C++ compiler torch's extension builder will use, if this machine has one."""
    return shutil.which(os.environ.get("CXX", "c++"))


def build(force: bool = False, verbose: bool = False) -> tuple[Path, float]:
    """Compile the kernels for this machine (no-op where built) and load them; (library, seconds)."""
    global _loaded
    path = library_path()
    if force and path.exists() and not _loaded:
        shutil.rmtree(path.parent)
    if path.exists():
        if not load():
            raise MidigenError(f"{path} exists but does not load: run `midigen kernels build --force`")
        return path, 0.0
    if compiler() is None:
        raise MidigenError("no C++ compiler found (set CXX or install g++): sampling uses the Python path")
    from torch.utils import cpp_extension

    try:  # torch's builder runs `ninja` from PATH: put the pip-installed one there (a venv's bin may not be)
        import ninja

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    except (ImportError, AttributeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        cpp_extension.load(name=NAME, sources=[str(SOURCE)], build_directory=str(path.parent),
                           extra_cflags=CFLAGS, is_python_module=False, verbose=verbose)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MidigenError(f"building the native sampling kernels failed ({first}); "
                           "`midigen kernels build --verbose` shows the compiler's output") from exc
    _loaded = True
    return path, time.perf_counter() - start


def resolve(kernels: str) -> bool:
    """SamplingOptions.kernels -> whether to use the native kernels."""
    if kernels not in CHOICES:
        raise ValueError(f"kernels={kernels!r}: use one of {', '.join(CHOICES)}")
    if kernels == "python":
        return False
    if load():
        return True
    if kernels == "native":
        raise MidigenError("the native sampling kernels are not built here: run `midigen kernels build`")
    return False

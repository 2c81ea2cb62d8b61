"""Row group `memory`: peak private memory of a training epoch as the corpus grows 1x/4x/16x, and of
generating 64 files."""

from __future__ import annotations

import sys
from pathlib import Path

from midigen.bench.core import Row, Sizes, run_child, subset_corpus
from midigen.data.events import EventParams


def bench_memory(corpus: Path, work: Path, bundle: Path, sizes: Sizes) -> list[Row]:
    """Peak RSS of a training epoch as the corpus repeats 1x/4x/16x, and of generating 64 files."""
    from midigen.data.cache import build_token_cache

    params = EventParams.seed()
    cache = work / "cache"
    peaks, tokens = {}, {}
    for copies in sizes.repeats_for_memory:
        root = subset_corpus(corpus, work / f"corpus{copies}x", sizes.memory_files, copies)
        build_token_cache(root, params, cache)  # built here, so the child only loads it (as a training run would)
        # Best of N fresh processes: allocator and thread start-up move a peak by tens of MiB run to run.
        runs = [run_child("train-epoch", {"root": str(root), "cache": str(cache), "windows": sizes.memory_windows,
                                           "tokenizer": params.to_dict()}) for _ in range(sizes.memory_repeats)]
        child = min(runs, key=lambda r: r["max_anon_mb"])
        peaks[copies], tokens[copies] = child, child["tokens"]
    rows = []
    base = sizes.repeats_for_memory[0]
    for copies in sizes.repeats_for_memory:
        peak = peaks[copies]
        notes = (f"peak private memory (RssAnon, sampled every 20 ms), best of {sizes.memory_repeats} fresh processes "
                 f"each fitting one epoch of "
                 f"{sizes.memory_windows} windows (3x64 one-hot LSTM, batch 64 x 219: the model's memory does not "
                 f"depend on the corpus, so a small one keeps the row quick) over the corpus repeated {copies}x "
                 f"({tokens[copies]:,} tokens, memory-mapped); baseline = the {base}x run. Peak RSS (VmHWM) "
                 f"{peak['max_rss_mb']:.0f} MiB, of which {peak['file_mb']:.0f} MiB file-backed at the end (the "
                 f"token file's pages the epoch touched: the OS's page cache, shared and reclaimable, at most the "
                 f"file's {2 * tokens[copies] / 2**20:.0f} MiB)")
        rows.append(Row(f"memory_training_epoch_{copies}x", peak["max_anon_mb"], peaks[base]["max_anon_mb"], "MiB",
                        f"flat: >= 0.9x of {base}x", 0.9, notes=notes))
    generate = run_child("generate", {"bundle": str(bundle), "num": 64})["max_rss_mb"]
    rows.append(Row("memory_generate_64", generate, 1024.0, "MiB", "< 1 GiB", 1.0,
                    notes="peak RSS (VmHWM) of a fresh process loading the seed-size bundle and generating 64 files "
                          "x 8 bars (generate_batch); baseline column = the 1 GiB budget"))
    return rows


class AnonPeak:
    """The peak of this process's private memory (RssAnon), sampled by a thread every `interval` s.

    Linux keeps a high-water mark for RSS only, which counts the file-backed pages of a memory
    map: for a training epoch over a memory-mapped token file that is page cache, not the
    process's own memory. Where /proc has no RssAnon, the figures stay 0.
    """

    def __init__(self, interval: float = 0.02):
        import threading

        self.interval, self.peak, self.file_mb = interval, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def read() -> dict:
        out = {}
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("RssAnon", "RssFile"):
                    out[key] = int(value.split()[0]) / 1024
        except (OSError, ValueError):
            pass
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.read().get("RssAnon", 0.0))
            self._stop.wait(self.interval)

    def __enter__(self) -> AnonPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        self._stop.set()
        self._thread.join()
        now = self.read()
        self.peak, self.file_mb = max(self.peak, now.get("RssAnon", 0.0)), now.get("RssFile", 0.0)


def _max_rss_mb() -> float:
    """This process's peak resident memory in MiB.

    On Linux, VmHWM: getrusage's ru_maxrss carries the parent's peak across fork + exec,
    so a child of a large process would report its parent's figure.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)  # bytes on macOS, KiB elsewhere

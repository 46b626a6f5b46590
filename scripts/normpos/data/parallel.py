"""Apply a per-line function to a text file on all cores, streaming, in order, with bounded memory.

Used for Moses tokenization and for applying BPE / sentencepiece, the per-line steps of the recipes.
``multiprocessing.Pool.imap`` is not used because its feeder thread reads the whole input ahead of slow
workers (4.5M WMT14 lines would end up in memory); here at most ``2 * workers`` batches are in flight.
Each worker builds its tokenizer / BPE model once (pool initializer), not once per batch.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path

from normpos.data.textfiles import count_lines, open_text, read_lines
from normpos.files import atomic_output

BATCH_LINES = 2000
_worker_fn: Callable[[str], str] | None = None


def _init(fn: Callable[[str], str]) -> None:
    global _worker_fn
    _worker_fn = fn


def _run(batch: list[str]) -> list[str]:
    return [_worker_fn(line) for line in batch]


def _batches(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(lines)
    while batch := list(islice(it, size)):
        yield batch


def map_lines(fn: Callable[[str], str], lines: Iterable[str], workers: int) -> Iterator[str]:
    """``map(fn, lines)`` over ``workers`` processes, in input order. ``fn`` must be picklable."""
    if workers <= 1:
        yield from map(fn, lines)
        return
    with multiprocessing.get_context("fork").Pool(workers, initializer=_init, initargs=(fn,)) as pool:
        pending: deque = deque()
        for batch in _batches(lines, BATCH_LINES):
            pending.append(pool.apply_async(_run, (batch,)))
            if len(pending) >= 2 * workers:
                yield from pending.popleft().get()
        while pending:
            yield from pending.popleft().get()


def transform_lines(fn: Callable[[str], str], lines: Iterable[str], dst: Path, workers: int, desc: str,
                    total: int | None = None) -> int:
    """Write ``fn(line)`` for every line to ``dst`` (atomically), with a progress bar; return the count.

    Without a terminal (make piped to a log) the bar is still written, every 30 s, so that a long WMT14
    step shows it is alive.
    """
    from tqdm import tqdm

    n = 0
    with atomic_output(dst) as tmp, open_text(tmp, "w") as out, tqdm(
        total=total, unit=" lines", desc=desc, file=sys.stderr, mininterval=2 if sys.stderr.isatty() else 30
    ) as bar:
        for line in map_lines(fn, lines, workers):
            out.write(line)
            out.write("\n")
            n += 1
            if n % BATCH_LINES == 0:
                bar.update(BATCH_LINES)
        bar.update(n % BATCH_LINES)
    return n


def transform_file(fn: Callable[[str], str], src: Path, dst: Path, workers: int, desc: str) -> int:
    """:func:`transform_lines` over the lines of the file ``src``."""
    return transform_lines(fn, read_lines(src), dst, workers, desc, total=count_lines(src))

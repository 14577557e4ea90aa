"""Folding in the background: the check-in log folded into the store every few seconds, so that
readers (`otapub status`, the dashboard) find few new lines (docs/checkins.md).

`otapub serve` runs :func:`follow_until_signalled` in a process of its own (otapub.server), and
`otapub fold --every` in the foreground; each fold is :func:`otapub.checkinstore.fold_logs`.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from otapub.checkinstore import FoldResult, StoreError, fold_logs

log = logging.getLogger(__name__)


def follow(config: Any, every: float, stop: threading.Event, extra_logs: tuple[Path, ...] = (),
           report: Callable[[FoldResult], None] | None = None) -> None:
    """:func:`fold_logs` now and then every ``every`` seconds until ``stop`` is set; ``report`` gets each result.

    A fold that fails (a locked or broken store, a log that cannot be read) is logged as a warning
    and tried again next time: it must not end the folding beside a running server. The store is
    opened afresh for each fold, so one moved away to be rebuilt is not written to behind its back.
    """
    failing = None  # the last failure's message: said once, not every few seconds while it lasts
    while not stop.is_set():
        try:
            result = fold_logs(config, extra_logs)
        except StoreError as exc:
            level = logging.DEBUG if str(exc) == failing else logging.WARNING
            log.log(level, "folding the check-in log: %s (trying again every %g s)", exc, every)
            failing = str(exc)
        else:
            if failing is not None:
                log.info("folding the check-in log again (%s: no more)", failing)
                failing = None
            log.debug("folded %d check-ins (%d bytes, %d lines skipped) in %.3f s", result.lines, result.bytes,
                      result.skipped, result.seconds)
            if report is not None:
                report(result)
        stop.wait(every)


class _Stopped(BaseException):  # not an Exception: nothing on the way out mistakes it for a failure
    pass


def follow_until_signalled(config: Any, every: float, extra_logs: tuple[Path, ...] = (),
                           report: Callable[[FoldResult], None] | None = None) -> None:
    """:func:`follow` until SIGTERM or SIGINT (call it from the main thread), then return.

    The signal ends a fold in progress at once rather than after it: its transaction is rolled
    back and its lines wait in the log for the next fold (a first fold of a long log takes minutes).
    """
    stop = threading.Event()

    def stopping(_signum: int, _frame: Any) -> None:
        if not stop.is_set():
            stop.set()  # also stops the loop should the exception be lost (raised as a COMMIT returned)
            raise _Stopped

    previous = {signum: signal.signal(signum, stopping) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        follow(config, every, stop, extra_logs, report)
    except _Stopped:
        pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

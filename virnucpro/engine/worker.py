"""The spawned worker: apply its environment, load the model once, then embed files on request.

It talks to the manager through its own pipe only, in the messages of
:mod:`virnucpro.engine.messages`. This module imports nothing heavy at the top:
CUDA_VISIBLE_DEVICES must be set before torch initialises CUDA in this process.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import time
import traceback
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from virnucpro.engine import messages as msg

if TYPE_CHECKING:
    from virnucpro.embeddings.base import Embedder

PROGRESS_INTERVAL_S = 0.5
EXIT_DEVICE_FAILURE = 3


class _Throttled:
    """Adds up batch progress and sends it at most every ``PROGRESS_INTERVAL_S``."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.sequences = self.tokens = 0
        self.last = time.monotonic()

    def __call__(self, sequences: int, tokens: int) -> None:
        self.sequences += sequences
        self.tokens += tokens
        if time.monotonic() - self.last >= PROGRESS_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        if (self.sequences or self.tokens) and not _send(self.conn, msg.BatchesDone(self.sequences, self.tokens)):
            raise SystemExit(0)  # the manager is gone: nobody will collect this file
        self.sequences = self.tokens = 0
        self.last = time.monotonic()


def worker_main(
    device: str,
    env: dict[str, str],
    threads: int | None,
    spec: bytes,
    token_budget: int | None,
    conn: Connection,
    log_level: int,
) -> None:
    """Entry point of a spawned worker process (see the module docstring).

    ``spec`` is a pickled ModelSpec, unpickled here once the environment is applied.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the manager handles Ctrl-C and stops us
    os.environ.update(env)  # before anything initialises CUDA here
    _forward_logging(conn, log_level)
    try:
        embedder = pickle.loads(spec).load(device)
    except BaseException as error:  # noqa: BLE001  (reported to the manager, which decides)
        from virnucpro.errors import model_load_failure

        _send(conn, msg.LoadFailed(model_load_failure(error), traceback.format_exc()))
        conn.close()
        return
    from virnucpro.engine.cpu_batches import batches_side_by_side
    from virnucpro.engine.embed_file import run_settings

    if not _send(conn, msg.Ready(embedder.stage, embedder.identity(), run_settings(embedder, token_budget))):
        return
    with batches_side_by_side(device, threads) as parallel:
        _serve(embedder, token_budget, parallel, conn)


def _serve(embedder: Embedder, token_budget: int | None, parallel: int, conn: Connection) -> None:
    """Embed the files the manager sends until it says stop or is gone."""
    from virnucpro.engine.embed_file import embed_file
    from virnucpro.errors import DeviceFailure

    progress = _Throttled(conn)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the manager is gone
            return
        if not isinstance(message, msg.Embed):  # Stop
            return
        try:
            result = embed_file(
                message.path, embedder, message.out_path, token_budget,
                skip_if_current=message.resume, on_batch=progress, parallel_batches=parallel,
            )
        except DeviceFailure as failure:
            _send(conn, msg.DeviceFailed(str(failure)))
            conn.close()
            os._exit(EXIT_DEVICE_FAILURE)  # no CUDA teardown on a broken context
        progress.flush()
        if not _send(conn, msg.FileDone(message.index, result)):
            return


def _send(conn: Connection, message: msg.WorkerMessage) -> bool:
    """Send to the manager; False when it is gone (the worker then exits quietly)."""
    try:
        conn.send(message)
    except OSError:
        return False
    return True


class _PipeHandler(logging.Handler):
    """Sends this worker's log records to the manager."""

    def __init__(self, conn: Connection) -> None:
        super().__init__()
        self.conn = conn

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.conn.send(msg.LogRecord(record.levelno, self.format(record)))
        except Exception:  # noqa: BLE001  (a broken pipe must not break the work)
            pass


def _forward_logging(conn: Connection, level: int) -> None:
    """Route the ``virnucpro`` logger of this process to the manager, at the manager's level."""
    from virnucpro.log import LOGGER_NAME

    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    logger.addHandler(_PipeHandler(conn))
    logger.setLevel(level)
    logger.propagate = False

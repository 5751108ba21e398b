"""The spawned worker: apply its environment, load the model once, then embed files on request.

It talks to the manager through its own pipe only (a killed worker can corrupt nothing but
its own channel). Messages to the manager:

- ``("ready", stage, fingerprint, settings)`` after the model loaded (the embedder's
  identity as JSON; :func:`~virnucpro.engine.embed_file.run_settings`: token budget, batch
  layout, the ``--precision auto`` measurements);
- ``("load_failed", message, traceback)`` when it could not load (then it exits);
- ``("progress", sequences, tokens)`` at most every ``PROGRESS_INTERVAL_S`` while embedding;
- ``("log", level, message)`` for each log record (the manager logs it, so a live display stays intact);
- ``("done", item_index, FileResult)`` after each file;
- ``("device_failed", message)`` when the GPU failed beyond recovery (then it exits with
  ``EXIT_DEVICE_FAILURE``; the manager gives its file to another worker).

Messages from the manager: ``("embed", item_index, path, out_path, resume)`` and ``("stop",)``.
This module imports nothing heavy at the top: CUDA_VISIBLE_DEVICES must be set before torch
initialises CUDA in this process.
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
        if (self.sequences or self.tokens) and not _send(self.conn, ("progress", self.sequences, self.tokens)):
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
    """Entry point of a spawned worker process (see the module docstring for the protocol).

    ``spec`` is a pickled ModelSpec, unpickled here once the environment is applied.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the manager handles Ctrl-C and stops us
    os.environ.update(env)  # before anything initialises CUDA here
    _forward_logging(conn, log_level)
    try:
        embedder = pickle.loads(spec).load(device)
    except BaseException as error:  # noqa: BLE001  (reported to the manager, which decides)
        from virnucpro.errors import model_load_failure

        _send(conn, ("load_failed", model_load_failure(error), traceback.format_exc()))
        conn.close()
        return
    from virnucpro.engine.cpu_batches import batches_side_by_side
    from virnucpro.engine.embed_file import embedder_fingerprint, run_settings

    ready = ("ready", embedder.stage, embedder_fingerprint(embedder), run_settings(embedder, token_budget))
    if not _send(conn, ready):
        return
    with batches_side_by_side(device, threads) as parallel:
        _serve(embedder, token_budget, parallel, conn)


def _serve(embedder: Embedder, token_budget: int | None, parallel: int, conn: Connection) -> None:
    """Embed the files the manager sends until it says stop or is gone."""
    from virnucpro.device_errors import DeviceFailure
    from virnucpro.engine.embed_file import embed_file

    progress = _Throttled(conn)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the manager is gone
            return
        if message[0] != "embed":
            return
        _, index, path, out_path, resume = message
        try:
            result = embed_file(
                path, embedder, out_path, token_budget, skip_if_current=resume, on_batch=progress, parallel_batches=parallel
            )
        except DeviceFailure as failure:
            _send(conn, ("device_failed", str(failure)))
            conn.close()
            os._exit(EXIT_DEVICE_FAILURE)  # no CUDA teardown on a broken context
        progress.flush()
        if not _send(conn, ("done", index, result)):
            return


def _send(conn: Connection, message: tuple) -> bool:
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
            self.conn.send(("log", record.levelno, self.format(record)))
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



"""Where a study lives, and the lock that keeps one machine's workers from starting more trials than asked.

``--storage`` takes an Optuna RDB URL (``sqlite:///path``, ``postgresql://...``, ``mysql://...``) or
``journal:PATH`` for Optuna's journal file (on a file system that several machines share). The default is
``sqlite:///OUT/study.sqlite3``. RDB storages record a heartbeat for each running trial, so a trial whose
process was killed is marked failed once its heartbeat is :data:`GRACE_S` seconds old, and a rerun goes on
without it; the journal file has no heartbeat (a killed worker's trial stays running there).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import warnings
from pathlib import Path
from typing import Iterator

import optuna

HEARTBEAT_S = 10  #: seconds between a running trial's heartbeats
GRACE_S = 60  #: a running trial without a heartbeat for this long is failed (its process is gone)
SQLITE_TIMEOUT_S = 120  #: how long a worker waits for another's SQLite write before failing
LOCK_FILE = ".tune.lock"
OUTPUTS_LOCK_FILE = ".outputs.lock"  #: held while a process writes the outputs and runs the final comparison


def default_storage(out: str | Path) -> str:
    return f"sqlite:///{(Path(out) / 'study.sqlite3').absolute()}"


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url`` (see the module docstring)."""
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:"):]).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if url.startswith("sqlite:") else {}
    lock = contextlib.nullcontext()
    if url.startswith("sqlite:///"):
        db = Path(url[len("sqlite:///"):]).expanduser()
        db.parent.mkdir(parents=True, exist_ok=True)
        # Optuna creates its tables and version row when the storage is built: two processes doing so at once on
        # a fresh file both insert the row, and one fails on its UNIQUE constraint
        lock = study_lock(db.parent, f"{db.name}.init.lock")
    with lock, warnings.catch_warnings():  # heartbeats are an experimental feature of Optuna's
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S,
                                          grace_period=GRACE_S)


def has_heartbeat(storage) -> bool:
    return isinstance(storage, optuna.storages.RDBStorage)


def fail_stale_trials(study: optuna.Study) -> None:
    """Mark failed the running trials whose heartbeat stopped (their process was killed), and those that
    never recorded one and started over :data:`GRACE_S` seconds ago (a process killed between asking for the
    trial and its first heartbeat: Optuna's own check only sees trials with a heartbeat)."""
    import datetime

    import sqlalchemy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    storage = study._storage
    storage = getattr(storage, "_backend", storage)  # Optuna wraps an RDBStorage in a cache
    engine = getattr(storage, "engine", None)
    if engine is None:
        return
    study_id = study._study_id
    query = sqlalchemy.text(
        "SELECT t.number, t.datetime_start FROM trials t LEFT JOIN trial_heartbeats h ON t.trial_id = h.trial_id "
        "WHERE t.study_id = :study AND t.state = 'RUNNING' AND h.trial_id IS NULL")
    with engine.connect() as conn:
        rows = conn.execute(query, {"study": study_id}).fetchall()
    now = datetime.datetime.now()
    for number, started in rows:
        if isinstance(started, str):
            started = datetime.datetime.fromisoformat(started)
        if started is not None and (now - started).total_seconds() > GRACE_S:
            try:
                study.tell(int(number), state=optuna.trial.TrialState.FAIL)
            except (RuntimeError, ValueError):  # another process finished or failed it meanwhile
                pass


@contextlib.contextmanager
def heartbeat(storage, trial: optuna.Trial) -> Iterator[None]:
    """Record ``trial``'s heartbeat in ``storage`` every :data:`HEARTBEAT_S` seconds while the block runs."""
    if not has_heartbeat(storage):
        yield
        return
    stop = threading.Event()

    def beat():
        while True:
            storage.record_heartbeat(trial._trial_id)
            if stop.wait(HEARTBEAT_S):
                return

    thread = threading.Thread(target=beat, name=f"textcl-tune-heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def study_lock(out: str | Path, name: str | None = None) -> Iterator[None]:
    """An exclusive lock on ``OUT/.tune.lock``: the processes that share the output folder count the study's
    trials and start the next one under it, so together they start exactly as many as asked. ``name`` locks
    another file of the folder instead (``OUTPUTS_LOCK_FILE``: writing the outputs and the final comparison)."""
    path = Path(out) / (name or LOCK_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

"""Running an export on a ``dask.distributed`` cluster: which cluster a ``--scheduler`` spec names, and the client.

``open_client(spec)`` is a context manager that yields a :class:`distributed.Client` (set as the default
scheduler, so ``export()`` computes on it) and closes what it opened on exit. A spec is one of:

- ``local`` or ``local:N``: a cluster of N worker processes on this machine. Default N: one per GPU when
  there are several (each worker sees only its GPU through ``CUDA_VISIBLE_DEVICES``, so its ``cuda:0`` is
  that GPU), else 1 (a CPU: torch already uses every core in one process). Each worker runs one chunk at a
  time (``threads_per_worker=1``) with its share of the cores for OpenMP and MKL and its share of the memory;
  the network itself runs with the thread count of the command's process (torch's CPU kernels round
  differently with another count), so the result equals the single-process one bit for bit.
- an address such as ``tcp://host:8786`` (or ``tls://``, ``ucx://``): an existing scheduler, which is left
  running.
- a ``.yaml``/``.yml`` file describing a dask-jobqueue cluster, e.g.
  ``{jobqueue: slurm, cores: 8, memory: 32GB, jobs: 4, walltime: "02:00:00"}``: ``jobqueue`` names the
  batch system (slurm, pbs, lsf, sge, htcondor, moab, oar), ``jobs`` how many jobs to start, and every other
  key goes to the dask-jobqueue cluster class as is. dask-jobqueue is imported only then
  (``pip install dask-jobqueue``).

Workers read the input and write a zarr output themselves: both paths must be visible to them (a shared
file system on a batch cluster). A TIFF is written by this process (see :func:`napari_emsr.reconstruct.export`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import InputError

log = logging.getLogger(__name__)

JOBQUEUE = {
    "slurm": "SLURMCluster",
    "pbs": "PBSCluster",
    "lsf": "LSFCluster",
    "sge": "SGECluster",
    "htcondor": "HTCondorCluster",
    "moab": "MoabCluster",
    "oar": "OARCluster",
}

SPEC_HELP = (
    "local, local:N (N worker processes here; default one per GPU, else 1), a scheduler address "
    "(tcp://host:port), or a dask-jobqueue YAML file ({jobqueue: slurm, cores: 8, memory: 32GB, jobs: 4, ...})"
)


def _distributed():
    try:
        import distributed
    except ImportError:
        raise InputError("--scheduler needs dask.distributed: pip install 'dask[distributed]' "
                         "(or napari-emsr[distributed])") from None
    return distributed


def active_client():
    """The ``distributed.Client`` that dask computations run on now, or None (no client, or another scheduler
    set with ``dask.config.set(scheduler=...)``)."""
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        client = default_client()
    except ValueError:
        return None
    import dask.base

    get = dask.base.get_scheduler()
    return client if getattr(get, "__self__", None) is client else None


class _OurErrorsQuiet(logging.Filter):
    """Drops a worker's "Compute Failed" record (task, exception and traceback) when the task raised one of our
    errors (:class:`~napari_emsr.errors.EMSRError`, e.g. NaN found in a chunk): the client re-raises it, and the
    command prints its message alone, without a traceback. Also drops the heartbeat failure a worker logs, with
    a traceback, when its own connection pool is closing (the worker is shutting down with the cluster: a
    heartbeat in flight then fails by design; seen once under load after a refused export, the traceback printed
    before the command's message). Every other failure is logged as distributed does."""

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Failed to communicate with scheduler during heartbeat"):
            exc = record.exc_info[1] if record.exc_info else None
            return not (type(exc).__name__ == "CommClosedError" and "ConnectionPool closing" in str(exc))
        args = record.args if isinstance(record.args, tuple) else ()
        if not str(record.msg).startswith("Compute Failed") or len(args) < 4:
            return True
        return not str(args[3]).startswith(tuple(f"{c.__name__}(" for c in _our_errors()))


def _our_errors() -> list[type]:
    from .errors import EMSRError

    out, todo = [], [EMSRError]
    while todo:
        c = todo.pop()
        out.append(c)
        todo.extend(c.__subclasses__())
    return out


def quiet_our_errors() -> None:
    """In a worker process: our errors are not logged with a traceback (see :class:`_OurErrorsQuiet`); called on
    the workers of a cluster this module starts as soon as they are up, and when an engine arrives in a process
    (:meth:`napari_emsr.engine.Engine.__setstate__`), so a restarted worker gets it too. Nothing happens in a
    process without ``distributed``."""
    if "distributed" not in sys.modules:
        return
    logger = logging.getLogger("distributed.worker")
    if not any(isinstance(f, _OurErrorsQuiet) for f in logger.filters):
        logger.addFilter(_OurErrorsQuiet())


def gpu_count() -> int:
    """CUDA devices here (0 without torch or CUDA)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def local_workers(n: int | None = None, *, gpus: int | None = None, cores: int | None = None,
                  memory: int | None = None) -> list[dict[str, Any]]:
    """Options of each local worker: ``nthreads``, ``memory_limit`` and ``env`` (GPU pinning, torch threads).

    ``n`` workers (default: ``gpus`` when there are several, else 1); with several GPUs worker ``i`` sees
    GPU ``i % gpus`` only. OpenMP and MKL in a worker get ``cores // n`` threads (dask's nanny would give them
    1); a chunk's network runs with the client's torch thread count whatever this says (the same bits as one
    process: :mod:`napari_emsr.reconstruct`).
    """
    gpus = gpu_count() if gpus is None else gpus
    cores = cores or os.cpu_count() or 1
    if n is None:
        n = gpus if gpus > 1 else 1
    if n < 1:
        raise InputError(f"a local cluster needs at least one worker, got {n}")
    if memory is None:
        try:
            import psutil

            memory = int(psutil.virtual_memory().total)
        except ImportError:  # pragma: no cover - psutil comes with distributed
            memory = 0
    share = max(1, cores // n)
    out = []
    for i in range(n):
        env = {"OMP_NUM_THREADS": str(share), "MKL_NUM_THREADS": str(share)}
        if gpus > 1:
            env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
        out.append({"nthreads": 1, "memory_limit": memory // n if memory else "auto", "env": env,
                    "silence_logs": logging.WARNING})
    return out


def parse_local(spec: str) -> int | None:
    """N of ``local:N`` (None for plain ``local``)."""
    if spec == "local":
        return None
    _, _, n = spec.partition(":")
    try:
        value = int(n)
    except ValueError:
        raise InputError(f"--scheduler {spec!r}: write local or local:N with N a whole number of workers") from None
    if value < 1:
        raise InputError(f"--scheduler {spec!r}: a local cluster needs at least one worker")
    return value


#: The scheduler of a cluster started here runs without the active memory manager (AMM). The export replicates
#: its engine (the model) to every worker (``Client.replicate``), which distributed documents as incompatible with
#: the AMM's ReduceReplicas policy (on by default): the AMM drops the replicas that replicate() then makes again,
#: and replicate() waited forever in 1 of a few runs of the cluster tests (seen as a hang of more than 10 minutes).
NO_AMM = {"distributed.scheduler.active-memory-manager.start": False}


def _scheduler_config():
    import dask

    return dask.config.set(NO_AMM)


def local_cluster(n: int | None = None):
    """A cluster of worker processes on this machine (see :func:`local_workers`); its scheduler runs without the
    active memory manager (see :data:`NO_AMM`)."""
    distributed = _distributed()
    workers = {
        i: {"cls": distributed.Nanny, "options": {**opts, "host": "127.0.0.1"}}
        for i, opts in enumerate(local_workers(n))
    }
    scheduler = {"cls": distributed.Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": ":0"}}
    log.info("starting a local cluster of %d worker process(es)", len(workers))
    with _scheduler_config():
        return distributed.SpecCluster(workers=workers, scheduler=scheduler, name="emsr-local")


def read_jobqueue(path: Path) -> tuple[str, int, dict[str, Any]]:
    """The batch system, the number of jobs and the dask-jobqueue options of a cluster description (YAML).

    Nothing is started and dask-jobqueue is not needed. Raises InputError, naming the file, for a file that
    cannot be read, is not YAML, is not a mapping with a ``jobqueue`` key, names an unknown batch system, or
    gives ``jobs`` that is not a whole number >= 1.
    """
    import yaml

    example = "e.g. {jobqueue: slurm, cores: 8, memory: 32GB, jobs: 4}"
    try:
        conf = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"--scheduler {path}: cannot read the cluster description ({exc}); write it as YAML, "
                         f"{example}") from None
    if not isinstance(conf, dict) or "jobqueue" not in conf:
        raise InputError(f"--scheduler {path}: the YAML file must be a mapping with a 'jobqueue' key "
                         f"({', '.join(JOBQUEUE)}), {example}")
    bad = [k for k in conf if not isinstance(k, str)]
    if bad:
        raise InputError(f"--scheduler {path}: option names must be words, got {bad[0]!r}; {example}")
    conf = dict(conf)
    kind = str(conf.pop("jobqueue")).lower()
    jobs = conf.pop("jobs", 1)
    if kind not in JOBQUEUE:
        raise InputError(f"--scheduler {path}: jobqueue {kind!r} is not one of {', '.join(JOBQUEUE)}")
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise InputError(f"--scheduler {path}: jobs must be a whole number >= 1, got {jobs!r}")
    return kind, jobs, conf


def _jobqueue_module(path: Path, kind: str):
    try:
        import dask_jobqueue
    except ImportError:
        raise InputError(f"--scheduler {path} describes a {kind} cluster, which needs dask-jobqueue: "
                         "pip install dask-jobqueue") from None
    return dask_jobqueue


def jobqueue_cluster(path: Path, *, submit: bool = True):
    """A dask-jobqueue cluster from a YAML file (see the module docstring, :func:`read_jobqueue`); ``jobs`` of
    them are submitted (``submit=False``: none, e.g. to look at ``cluster.job_script()``).

    The description is checked by building the job script before anything is submitted: options that
    dask-jobqueue refuses (an unknown option, ``memory: lots``, ``cores: eight``) end in InputError.
    """
    kind, jobs, conf = read_jobqueue(path)
    cls = getattr(_jobqueue_module(path, kind), JOBQUEUE[kind])
    try:
        with _scheduler_config():  # its scheduler runs here, like a local cluster's (see NO_AMM)
            cluster = cls(**conf)
    except (TypeError, ValueError, ArithmeticError, KeyError) as exc:
        raise InputError(f"--scheduler {path}: {JOBQUEUE[kind]} refused the description: {exc}") from None
    try:
        cluster.job_script()
    except (TypeError, ValueError, ArithmeticError, KeyError) as exc:
        cluster.close()
        raise InputError(f"--scheduler {path}: {JOBQUEUE[kind]} cannot write a job script from the description: "
                         f"{exc}") from None
    if submit:
        # NOTE: dask-jobqueue submits in the background and only logs a failure: without the submit command
        # the export would wait for workers forever.
        command = str(getattr(cls.job_cls, "submit_command", "") or "").split()
        if command and shutil.which(command[0]) is None:
            cluster.close()
            raise InputError(f"--scheduler {path}: {command[0]} (the {kind} submit command) is not found here: run "
                             f"emsr on a machine that submits {kind} jobs (a login node of the cluster)")
        cluster.scale(jobs=jobs)
        log.info("submitted %d %s job(s)", jobs, kind)
    return cluster


def check_spec(spec: str | os.PathLike | None) -> None:
    """Refuse a ``--scheduler`` value that cannot work, without starting anything (so a command can say so
    before it trains)."""
    if spec is None or str(spec).strip() == "":
        return
    text = str(spec).strip()
    if text == "local" or text.startswith("local:"):
        parse_local(text)
    elif "://" in text:
        pass
    elif Path(text).suffix.lower() in (".yaml", ".yml"):
        p = Path(text).expanduser()
        if not p.is_file():
            raise InputError(f"--scheduler {text}: no such file")
        _distributed()
        _jobqueue_module(p, read_jobqueue(p)[0])
    else:
        raise InputError(f"--scheduler {text!r} is not understood: give {SPEC_HELP}")
    _distributed()


@contextlib.contextmanager
def open_client(spec: str | os.PathLike | None) -> Iterator[Any]:
    """A ``distributed.Client`` for ``spec`` (see the module docstring), the default scheduler while open.

    ``None`` or ``""`` yields None and changes nothing. A cluster started here is closed on exit; an
    existing scheduler named by its address is left running.
    """
    if spec is None or str(spec).strip() == "":
        yield None
        return
    # NOTE: distributed logs every start and stop at INFO on its own logger (set up when it is imported); keep
    # them for --verbose only.
    _distributed()
    dlog = logging.getLogger("distributed")
    level = dlog.level
    if not logging.getLogger().isEnabledFor(logging.INFO):
        dlog.setLevel(logging.WARNING)
    try:
        with _client(spec) as client:
            yield client
    finally:
        dlog.setLevel(level)


@contextlib.contextmanager
def _client(spec: str | os.PathLike) -> Iterator[Any]:
    text = str(spec).strip()
    cluster = None
    if text == "local" or text.startswith("local:"):
        n = parse_local(text)
        distributed = _distributed()
        cluster = local_cluster(n)
        target: Any = cluster
    elif "://" in text:
        distributed = _distributed()
        target = text
    elif Path(text).suffix.lower() in (".yaml", ".yml"):
        p = Path(text).expanduser()
        if not p.is_file():
            raise InputError(f"--scheduler {text}: no such file")
        distributed = _distributed()
        cluster = jobqueue_cluster(p)
        target = cluster
    else:
        raise InputError(f"--scheduler {text!r} is not understood: give {SPEC_HELP}")
    try:
        try:
            client = distributed.Client(target, set_as_default=True)
        except OSError as exc:
            raise InputError(f"--scheduler {text}: cannot reach the scheduler: {exc}") from None
        try:
            if cluster is not None:  # our own workers: quiet from the start, not only once an engine arrives
                client.run(quiet_our_errors)
            yield client
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()

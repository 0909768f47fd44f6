"""The launch: which process this is, read from the environment ``torchrun`` sets, and the one collective
sharded encoding needs (a barrier).

torchrun (one node or several) gives every process ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and
``LOCAL_WORLD_SIZE``. Without them, or with ``WORLD_SIZE=1``, this is a single process and nothing here
touches ``torch.distributed``.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Mapping

from textcl.errors import ConfigError

#: how long a barrier waits for the slowest rank. Ranks finish their shards at different times, and a shard
#: of a large corpus on CPU takes hours; when a rank dies torchrun stops the others, so waiting long costs
#: nothing then (the defaults, 30 min for gloo and 10 min for nccl, would kill healthy runs).
BARRIER_TIMEOUT = timedelta(days=7)


@dataclass(frozen=True)
class Launch:
    """This process's place in the launch: global ``rank`` of ``world`` processes, ``local_rank`` of
    ``local_world`` on its node. The default is a single process."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(env: Mapping[str, str], name: str, default: int | None) -> int:
    raw = env.get(name, "")
    if raw == "":
        if default is None:
            raise ConfigError(name, f"not set, but WORLD_SIZE is {env.get('WORLD_SIZE')}; start the processes "
                              "with torchrun, which sets both", source="environment")
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(name, f"expected an integer, got {raw!r}", source="environment") from None


def launch_from_env(environ: Mapping[str, str] | None = None) -> Launch:
    """The :class:`Launch` described by ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE``
    (default: ``os.environ``). A missing ``WORLD_SIZE`` or ``WORLD_SIZE=1`` is a single process; a missing
    ``LOCAL_*`` means one node. Raises :class:`ConfigError` naming the variable that is inconsistent."""
    env = os.environ if environ is None else environ
    world = _env_int(env, "WORLD_SIZE", 1)
    if world < 1:
        raise ConfigError("WORLD_SIZE", f"expected a positive number of processes, got {world}", source="environment")
    if world == 1:
        return Launch()
    rank = _env_int(env, "RANK", None)
    local_world = _env_int(env, "LOCAL_WORLD_SIZE", world)
    local_rank = _env_int(env, "LOCAL_RANK", rank)
    if not 0 <= rank < world:
        raise ConfigError("RANK", f"expected 0 to WORLD_SIZE - 1 = {world - 1}, got {rank}", source="environment")
    if not 1 <= local_world <= world:
        raise ConfigError("LOCAL_WORLD_SIZE", f"expected 1 to WORLD_SIZE = {world}, got {local_world}",
                          source="environment")
    if not 0 <= local_rank < local_world:
        raise ConfigError("LOCAL_RANK", f"expected 0 to LOCAL_WORLD_SIZE - 1 = {local_world - 1}, got {local_rank}",
                          source="environment")
    return Launch(rank, world, local_rank, local_world)


def threads_per_process(launch: Launch, environ: Mapping[str, str], cpus: int) -> int | None:
    """torch's intra-op threads for one of several processes: None (torch's own choice) when
    ``OMP_NUM_THREADS`` is set, else this node's ``cpus`` shared among its ``local_world`` processes.

    torchrun itself sets ``OMP_NUM_THREADS=1`` for every process when it starts more than one per node and
    the variable is unset, so under torchrun the share applies only where that default was removed; set
    ``OMP_NUM_THREADS`` to cores / processes to use a whole CPU node."""
    if environ.get("OMP_NUM_THREADS"):
        return None
    from textcl.threads import threads_for

    return threads_for("encode", processes=launch.local_world, cores=cpus)


def start(launch: Launch, environ: Mapping[str, str] | None = None) -> bool:
    """Prepare this process for a sharded run: its torch threads (:func:`threads_per_process`), its GPU
    (``cuda:LOCAL_RANK``, made the current device so that a model moved to ``"cuda"`` lands there) and the
    process group (gloo on CPU, nccl with CUDA; rendezvous from torchrun's ``MASTER_ADDR``/``MASTER_PORT``).
    Call it before loading the model. Does nothing for a single process.

    Returns whether it started the process group. A group that is already up (the caller's, or one an
    earlier command in this process started) is kept; one started here lives until the process exits:
    gloo cannot rendezvous a second time on torchrun's store once a group was destroyed (it hangs), so two
    commands in one process share the group.
    """
    if not launch.distributed:
        return False
    import torch
    import torch.distributed as tdist

    env = os.environ if environ is None else environ
    from textcl.threads import usable_cores

    threads = threads_per_process(launch, env, usable_cores())
    if threads is not None:
        torch.set_num_threads(threads)
    cuda = torch.cuda.is_available()
    if cuda:
        if launch.local_rank >= torch.cuda.device_count():
            raise ConfigError("LOCAL_RANK", f"{launch.local_rank}, but this node has {torch.cuda.device_count()} "
                              "GPU(s); start at most one process per GPU (--nproc_per_node)", source="environment")
        torch.cuda.set_device(launch.local_rank)
    if tdist.is_initialized():
        return False
    tdist.init_process_group("nccl" if cuda else "gloo", rank=launch.rank, world_size=launch.world,
                             timeout=BARRIER_TIMEOUT)
    atexit.register(_destroy)
    return True


def _destroy() -> None:
    import torch.distributed as tdist

    if tdist.is_initialized():
        tdist.destroy_process_group()


def barrier(launch: Launch) -> None:
    """Wait until every process of the launch gets here (nothing for a single process)."""
    if not launch.distributed:
        return
    import torch
    import torch.distributed as tdist

    if tdist.get_backend() == "nccl":
        tdist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        tdist.barrier()

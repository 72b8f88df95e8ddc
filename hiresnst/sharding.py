"""Spreading tiles over devices and hosts: the mesh, replication, and `jax.distributed`.

hiresnst uses today's form of JAX data parallelism: `jax.shard_map` over a one-axis
`jax.sharding.Mesh` (axis `tiles`) inside `jit` — the successor of `jax.pmap`. Each device scans
its share of the tile batches; Grams, loss terms and the image gradient are combined with `psum`,
so the host never gathers features. With several processes (`jax.distributed`), the mesh spans
every process's devices and every process runs the same program on its own devices.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from .errors import UserError

PLATFORMS = ("cpu", "gpu", "tpu")


def select_platform(platform: str | None) -> None:
    """Restrict JAX to one platform; must run before the first JAX computation."""
    if platform is None:
        return
    if platform not in PLATFORMS:
        raise UserError(f"unknown --platform {platform!r}; use one of: {', '.join(PLATFORMS)}")
    if platform == "gpu" and not gpu_plugins():
        raise UserError(NO_GPU)
    jax.config.update("jax_platforms", platform)


NO_GPU = (
    "--platform gpu: this JAX has no GPU back end (JAX's CUDA wheels are not installed); "
    "on a machine with an NVIDIA GPU run pip install 'hiresnst[cuda]', or use --platform cpu"
)


def gpu_plugins() -> list[str]:
    """JAX's installed GPU plugins (CUDA or ROCm), found without initialising any back end
    (which must wait until `init_distributed`)."""
    import pkgutil
    from importlib.metadata import entry_points

    names = {ep.name for ep in entry_points(group="jax_plugins")}
    try:
        import jax_plugins  # the namespace package that GPU plugins install into
    except ImportError:
        pass
    else:
        names |= {m.name for m in pkgutil.iter_modules(jax_plugins.__path__)}
    return sorted(n for n in names if "cuda" in n or "rocm" in n)


def env_int(name: str) -> int | None:
    """An integer environment variable (unset or empty: None); anything else is a UserError
    naming the variable, not a ValueError from deep inside."""
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise UserError(
            f"environment variable {name} must be a whole number, got {text!r}"
        ) from None


def init_distributed(
    coordinator: str | None, num_processes: int | None, process_id: int | None
) -> bool:
    """Join a multi-process run. Arguments, or the cluster's environment (cloud TPU/GPU, SLURM,
    or HIRESNST_COORDINATOR / HIRESNST_NUM_PROCESSES / HIRESNST_PROCESS_ID), say where the
    coordinator is. Returns True when the run is multi-process."""
    coordinator = coordinator or os.environ.get("HIRESNST_COORDINATOR")
    if num_processes is None:
        num_processes = env_int("HIRESNST_NUM_PROCESSES")
    if process_id is None:
        process_id = env_int("HIRESNST_PROCESS_ID")
    if coordinator is None and num_processes is None and process_id is None:
        return False
    auto = coordinator == "auto"  # the cluster (cloud TPU, SLURM, ...) says where and who
    if coordinator is not None and not auto and (num_processes is None or process_id is None):
        raise UserError("--coordinator needs --num-processes and --process-id as well")
    if num_processes is not None and num_processes < 1:
        raise UserError(
            f"--num-processes (or HIRESNST_NUM_PROCESSES) must be ≥ 1, got {num_processes}"
        )
    if num_processes is not None and not 0 <= (process_id or 0) < num_processes:
        raise UserError(f"--process-id must be in 0..{num_processes - 1}, got {process_id}")
    # CPU processes need gloo for cross-process collectives; GPUs (NCCL) and TPUs ignore it.
    # Asking which backend is in use would initialise it, which must come after initialize().
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        if auto:
            jax.distributed.initialize()
        else:
            jax.distributed.initialize(coordinator, num_processes, process_id)
    except Exception as e:  # the coordinator is unreachable, the port taken, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"could not join the distributed run at {coordinator}: {first}") from None
    return True


def make_mesh(devices: int | None = None) -> Mesh | None:
    """A one-axis mesh over the first `devices` devices (default: all, of every process);
    None for a single device, which needs no mesh."""
    available = jax.devices()
    n = len(available) if devices is None else devices
    if not 1 <= n <= len(available):
        raise UserError(f"--devices must be between 1 and {len(available)} here, got {devices}")
    if n == 1:
        return None
    return Mesh(np.array(available[:n]), ("tiles",))


def replicate(tree, mesh: Mesh | None):
    """Place a pytree on every device of the mesh (no-op without one)."""
    if mesh is None:
        return tree
    sharding = NamedSharding(mesh, P())
    return jax.tree_util.tree_map(
        lambda a: jax.make_array_from_callback(
            np.shape(a), sharding, lambda idx: np.asarray(a)[idx]
        ),
        tree,
    )


def process_count() -> int:
    return jax.process_count()


def is_main_process() -> bool:
    """Only process 0 writes outputs."""
    return jax.process_index() == 0


def host_array(a: jax.Array) -> np.ndarray:
    """A replicated array's value on this host (also when other processes hold copies)."""
    if getattr(a, "is_fully_addressable", True):
        return np.asarray(a)
    return np.asarray(a.addressable_data(0))


def host_scalar(a: jax.Array) -> float:
    return float(host_array(a))


def device_memory_bytes() -> int:
    """Memory of this process's first device (physical RAM for the CPU)."""
    dev = jax.local_devices()[0]
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def platform_name() -> str:
    """The platform this process computes on: cpu, gpu or tpu."""
    return jax.local_devices()[0].platform

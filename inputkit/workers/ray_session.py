"""The trainer's connection to Ray: started or attached once per process, shared by every pool.

``ray.init`` is process-wide, so every Ray pool of every runner in this process
shares one connection. The first pool to start opens it:

- ``address: null`` starts a *private* local Ray (``ray.init(address="local")``) with
  ``num_cpus`` CPUs, never attaching to whatever cluster a leftover ``/tmp/ray`` file
  or ``RAY_ADDRESS`` points at; the last pool to close shuts it down again;
- any other address (``auto``, ``host:port``, ``ray://host:port``) attaches to that
  cluster, after a TCP probe that answers in seconds where ``ray.init`` could wait
  for minutes on an address that does not answer; closing leaves the cluster up.

If the program called ``ray.init`` itself, pools use that connection and never shut it
down: it is the program's.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from inputkit.errors import ConfigError, InputkitError

_lock = threading.Lock()
_users = 0
_ours = False  # this module called ray.init (and shuts Ray down when the last pool closes)
_key: tuple[Any, ...] | None = None  # what the open connection was made for


@dataclass(frozen=True)
class Connected:
    """What a pool needs to know about the cluster it runs on."""

    address: str  # the cluster's GCS address (host:port), or the Ray Client address
    local: bool  # a private local Ray started for this process
    started_s: float  # seconds ray.init took (0 when the connection was already open)


def import_ray(key: str) -> Any:
    """``ray``, or an error that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(key, "Ray workers need Ray, which is not installed; "
                          "pip install 'inputkit-ml[ray]' (or pick workers=threads or "
                          "workers=processes)") from exc
    return ray


def acquire(address: str | None, num_cpus: float | None, connect_timeout: float,
            key: str, needed_cpus: float = 0.0) -> Connected:
    """Open (or share) the connection for one pool; pair every call with :func:`release`.

    A private local Ray gets ``num_cpus``, or by default this process's cores but at least
    ``needed_cpus`` (what the actors ask for), so that every actor is placed."""
    global _users, _ours, _key
    ray = import_ray(key + "kind")
    with _lock:
        wanted = (address, num_cpus)
        if ray.is_initialized():
            if _ours and _key != wanted and _users:
                raise ConfigError(key + "ray.address", f"this process already runs Ray for "
                                  f"another input with address={_key[0] if _key else None} "
                                  "and num_cpus="
                                  f"{_key[1] if _key else None}; one process has one Ray "
                                  "connection, so give every input the same workers.ray "
                                  "address and num_cpus")
            _users += 1
            return Connected(address=_current_address(ray), local=_ours and address is None,
                             started_s=0.0)
        begin = time.monotonic()
        if address is None:
            cpus = num_cpus if num_cpus is not None else \
                max(float(len(os.sched_getaffinity(0))), needed_cpus)
            # Ray runs its workers at nice 15 by default, under the trainer and under process
            # workers (nice 0): on a busy host the actors then get a fraction of their CPUs.
            # A private Ray exists only for these actors, so they run at the same priority
            # as process workers would.
            ray.init(address="local", num_cpus=cpus, include_dashboard=False,
                     log_to_driver=False, configure_logging=False,
                     _system_config={"worker_niceness": 0})
        else:
            _probe(ray, address, connect_timeout, key + "ray.address")
            try:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            except ConnectionError as exc:
                raise ConfigError(key + "ray.address", f"could not connect to the Ray cluster "
                                  f"at {address}: {exc}") from exc
        _ours, _key, _users = True, wanted, 1
        return Connected(address=_current_address(ray), local=address is None,
                         started_s=time.monotonic() - begin)


def release() -> None:
    """One pool is done; the last one shuts down a Ray this module started."""
    global _users, _ours, _key
    with _lock:
        if _users == 0:
            return
        _users -= 1
        if _users or not _ours:
            return
        _ours, _key = False, None
        import ray

        if ray.is_initialized():
            ray.shutdown()


def _current_address(ray: Any) -> str:
    try:
        return str(ray.get_runtime_context().gcs_address)
    except Exception:  # Ray Client connections have no GCS address on this side
        return "ray client"


def _probe(ray: Any, address: str, timeout: float, key: str) -> None:
    """Fail within ``timeout`` seconds if nothing answers at the cluster's address."""
    target = _resolve(ray, address, key)
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(key, f"'{address}' is not an address Ray understands: use auto, "
                          "host:port or ray://host:port")
    deadline = time.monotonic() + timeout
    last: OSError | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host.strip("[]"), int(port)),
                                          timeout=max(0.1, min(2.0, deadline - time.monotonic()))):
                return
        except OSError as exc:
            last = exc
            time.sleep(0.2)
    raise InputkitError(f"{key}: no Ray cluster answers at {target} (tried for {timeout:g}s: "
                        f"{last}); start one with `ray start --head` there, check the address, "
                        "or use workers.ray.address=null for a private local Ray")


def _resolve(ray: Any, address: str, key: str) -> str:
    """host:port to probe for ``address`` (``auto``: the address Ray itself would pick)."""
    if address.startswith("ray://"):
        return address[len("ray://"):].split("/", 1)[0]
    if address != "auto":
        return address
    env = os.environ.get("RAY_ADDRESS")
    if env and env != "auto":
        return _resolve(ray, env, key)
    try:
        from ray._private.services import get_ray_address_from_environment

        found = get_ray_address_from_environment("auto", None)
    except Exception as exc:  # ConnectionError: no cluster started on this machine
        raise InputkitError(f"{key}=auto: no Ray cluster was started on this machine ({exc}); "
                            "start one with `ray start --head`, name its address, or use "
                            "workers.ray.address=null for a private local Ray") from exc
    return str(found)

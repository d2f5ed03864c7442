"""Run-wide torch settings, applied when a run starts (the ``run_starting`` and ``run_facts``
hooks): the config's ``threads:``, the warning when a server on this machine would share the
CPU cores with training, and the thread counts a run's results depend on."""

from __future__ import annotations

import os
from typing import Any

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "0.0.0.0")


def share_cores(config, echo=print) -> None:
    """Apply the config's ``threads``; without it, warn when a stage calls a server on this
    machine (a judge or teacher) while the run trains on the CPU: both would use every core."""
    threads = config.run.threads
    import torch  # a stage imports it anyway

    if threads is not None:
        torch.set_num_threads(threads)
        return
    local = loopback_urls(config.raw)
    if local and not torch.cuda.is_available():
        where, url = local[0]
        echo(f"warning: {where} = {url} is served on this machine, and this run trains on its CPU with every "
             f"core ({os.cpu_count()}). Two torch processes with every core each slow each other down (measured: "
             f"40x on 2 cores). Fix: set `threads:` at the top of the config and start the server with "
             f"`reasonrl serve ... --threads N` so that the two add up to the cores.")


def loopback_urls(value: Any, path: str = "") -> list[tuple[str, str]]:
    """(config path, url) of every ``base_url`` that points at this machine."""
    from urllib.parse import urlparse

    found = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        where = f"{path}.{key}" if isinstance(key, str) else f"{path}[{key}]"
        if key == "base_url" and isinstance(item, str) and urlparse(item).hostname in LOOPBACK_HOSTS:
            found.append((where.lstrip("."), item))
        else:
            found += loopback_urls(item, where)
    return found


def thread_settings() -> dict[str, Any]:
    """Results depend on how many threads torch reduces over, so runs record it."""
    settings: dict[str, Any] = {name: os.environ.get(name) for name in
                                ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    settings["cpu_count"] = os.cpu_count()
    try:
        import torch  # a stage imports it anyway; the core only asks when a run starts
    except ImportError:
        return settings
    settings.update(torch_threads=torch.get_num_threads(), torch_interop_threads=torch.get_num_interop_threads())
    return settings

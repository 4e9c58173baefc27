"""Reaching the Hugging Face Hub: fail fast when it cannot be reached, instead of retrying for ~23 s.

When a file is neither cached nor reachable, ``huggingface_hub`` retries the request five times with
back-off (1, 2, 4, 8, 8 s), logging a warning each time: right for a flaky connection, noise for a
machine with no network or a wrong ``HF_ENDPOINT``. So a load first sends one request to the endpoint
(through the hub's own HTTP client, so proxies and ``HF_ENDPOINT`` apply, bounded by
``HF_HUB_ETAG_TIMEOUT``). If it gets no answer, the load runs in offline mode: cached files still load,
and a missing one fails at once, with one line of ours.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager


def offline() -> bool:
    """Whether offline mode is on (``HF_HUB_OFFLINE``, or ``HF_DATASETS_OFFLINE`` for ``datasets``)."""
    import datasets.config
    from huggingface_hub import constants

    return bool(datasets.config.HF_HUB_OFFLINE or constants.HF_HUB_OFFLINE)


def unreachable() -> str | None:
    """Why the hub endpoint gives no answer now (one request, asked once per process), or None when it
    answered (with any HTTP status) or offline mode is on, so that nothing is requested anyway."""
    from huggingface_hub import constants

    return None if offline() else _probe(constants.ENDPOINT, constants.HF_HUB_ETAG_TIMEOUT)


@functools.lru_cache(maxsize=4)
def _probe(endpoint: str, timeout: float) -> str | None:
    from huggingface_hub import get_session

    try:
        get_session().head(endpoint, timeout=timeout, follow_redirects=False)
    except Exception as e:  # any transport failure (refused, DNS, timeout, TLS, proxy) means no answer
        text = str(e).strip().splitlines()
        return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
    return None


@contextmanager
def reach() -> Iterator[str | None]:
    """Run a hub load with the hub as it is: yields None when it answered, else why not, and then keeps
    the load to the local caches (offline mode, restored on exit) so that nothing is retried."""
    reason = unreachable()
    if reason is None:
        yield None
        return
    import datasets.config
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield reason
    finally:
        constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved

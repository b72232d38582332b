"""Whether the Hugging Face Hub can be reached, and the one error when it cannot.

Every reader that may need the Hub -- the model loader (``models.loading``) and the evaluation
texts (``data.evaldata``) -- asks ``hub_reachable`` before a download, so an unreachable Hub
gives one clear error (``HubUnavailable``) within seconds, not a stack of retries.
"""
from __future__ import annotations

import socket
from urllib.parse import urlparse


class HubUnavailable(RuntimeError):
    """The name needs the Hugging Face Hub and the Hub cannot be reached."""


def hub_reachable(timeout: float = 3.0) -> bool:
    """True when the Hub's endpoint accepts a connection within ``timeout`` seconds; False at
    once under ``HF_HUB_OFFLINE=1``."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False

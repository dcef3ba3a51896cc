"""Which failures a retry can fix: one rule for the server backend and for uploads to the Hub."""

from __future__ import annotations


def transient_status(status: int) -> bool:
    """429 (slow down) and 5xx (the server's trouble) may pass; other 4xx are refusals that will not."""
    return status == 429 or status >= 500


def transient(e: BaseException) -> bool:
    """Connection problems, timeouts, and HTTP errors whose status is transient."""
    import httpx

    if isinstance(e, (ConnectionError, TimeoutError, httpx.TransportError)):
        return True
    try:
        import requests
    except ImportError:  # requests comes with huggingface_hub's older releases only
        pass
    else:
        if isinstance(e, (requests.ConnectionError, requests.Timeout)):
            return True
    status = getattr(getattr(e, "response", None), "status_code", None)
    return status is not None and transient_status(status)

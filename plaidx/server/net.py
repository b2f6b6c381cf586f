"""What ``plaidx serve`` checks before it starts, without the server extra: which addresses are loopback (the server
listens beyond them only with an API key) and which index names it can serve."""

from __future__ import annotations

import ipaddress
from typing import Any


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_index_name(name: Any) -> None:
    """A ValueError for a name that cannot be a served index's (it appears in URLs and JSON)."""
    if not isinstance(name, str) or not name or len(name) > 200 or any(c in name for c in "/\\\x00"):
        raise ValueError(f"index name {name!r} is not usable: give a non-empty name without slashes")

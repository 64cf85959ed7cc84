"""Which URLs a webhook may be sent to: http(s) only, and never the server's own loopback or link-local
addresses (cloud metadata at 169.254.169.254, services bound to localhost) unless an admin allowed
them for that endpoint. Checked at registration and again at every delivery, so a host name that
later resolves somewhere else (DNS rebinding) is refused too."""
from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


class TargetRefused(ValueError):
    """The URL is not one deliveries may go to; the message says why."""


def check_target(url: str, allow_local: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise TargetRefused(f"only http and https URLs are allowed (got {parts.scheme or 'no'} scheme)")
    if not parts.hostname:
        raise TargetRefused("the URL has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, ValueError) as exc:
        raise TargetRefused(f"cannot resolve {parts.hostname}: {exc}") from None
    if allow_local:
        return
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if address.is_loopback or address.is_link_local or address.is_unspecified or address.is_multicast:
            raise TargetRefused(f"{parts.hostname} resolves to {address}, a loopback or link-local address of "
                                "this server; only an admin may allow that (allow_local)")

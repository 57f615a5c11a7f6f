"""Running the app: uvicorn in the foreground (CLI) or in a background thread (tests, benchmarks)."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time

from panderm.errors import ConfigError

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; False for 0.0.0.0, LAN addresses and other names."""
    host = host.strip().strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: Host names every server answers to (a browser on this machine).
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
#: ``--host`` values that listen on every interface.
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def normalise_host(value: str) -> str:
    """Lower-case host name without port, brackets or trailing dot: ``[::1]:8765`` → ``::1``."""
    value = value.strip().lower()
    if value.startswith("["):
        value = value[1:].split("]", 1)[0]
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def accepted_hosts(host: str) -> frozenset[str] | None:
    """The ``Host`` names a server listening on ``host`` answers to; ``None``: any (wildcard ``--host``).

    Loopback names always; the ``--host`` name too when it is another. A wildcard
    (``0.0.0.0``, ``::``) accepts any name: such a server needs a token anyway.
    """
    name = normalise_host(host)
    if name in WILDCARD_HOSTS:
        return None
    return frozenset((*LOOPBACK_HOSTS, name))


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without an access token."""
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"refusing to serve on non-loopback host '{host}' without an access token",
            hint="pass --token SECRET (or set PANDERM_SERVE_TOKEN), or keep the default --host 127.0.0.1",
        )


def run(app, host: str = "127.0.0.1", port: int = 8765, log_level: str = "info") -> None:
    """Serve ``app`` with uvicorn in this process (one worker) until interrupted."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level.lower(), workers=1,
                access_log=False, server_header=False)


class BackgroundServer:
    """``with BackgroundServer(app) as url:`` — uvicorn on a free loopback port in a daemon thread."""

    def __init__(self, app, host: str = "127.0.0.1", log_level: str = "warning"):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.host, self.port = self.sock.getsockname()[:2]
        config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.url = f"http://{self.host}:{self.port}"

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()

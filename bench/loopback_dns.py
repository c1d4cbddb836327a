"""A DNS server on loopback whose records the caller sets: what a test or benchmark points a
gateway at (``dns://127.0.0.1:PORT/NAME:8001``) to add and remove replicas as Kubernetes'
headless Service would, without touching the machine's resolver configuration.

Authoritative for the names it is given (A and AAAA records, TTL 0), it answers over UDP from
a thread: NXDOMAIN for any other name, an empty answer for a record type a name lacks. Every
answer is read from the records as they are at that moment, and each query is counted.

Typical usage::

    with LoopbackDns() as dns:                      # 127.0.0.1, a free port
        dns.set("replicas.hetserve.test", ["127.0.27.1", "127.0.27.2"])
        target = f"dns://{dns.address}/replicas.hetserve.test:8001"
        dns.set("replicas.hetserve.test", ["127.0.27.2"])   # a replica leaves
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterable
from types import TracebackType

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

LOOPBACK = "127.0.0.1"
RECORD_TTL_S = 0
MAX_DATAGRAM_BYTES = 4096
POLL_S = 0.1
"""How long the serving thread blocks on its socket before it looks whether it should stop."""


class LoopbackDns:
    """The server: ``set`` a name's addresses, ``start``/``stop`` (or ``with``)."""

    def __init__(self, host: str = LOOPBACK, port: int = 0) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind((host, port))
        self._socket.settimeout(POLL_S)
        self._records: dict[dns.name.Name, tuple[str, ...]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="loopback-dns", daemon=True)
        self.queries = 0

    @property
    def address(self) -> str:
        """``host:port`` of the server (the authority of a ``dns://`` target)."""
        host, port = self._socket.getsockname()[:2]
        return f"{host}:{port}"

    def set(self, name: str, addresses: Iterable[str]) -> None:
        """From now on ``name`` resolves to ``addresses`` (IPv4 and IPv6 literals)."""
        checked = tuple(str(ipaddress.ip_address(a)) for a in addresses)
        with self._lock:
            self._records[dns.name.from_text(name)] = checked

    def addresses(self, name: str) -> tuple[str, ...]:
        """What ``name`` resolves to now."""
        with self._lock:
            return self._records.get(dns.name.from_text(name), ())

    def start(self) -> LoopbackDns:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._socket.close()

    def __enter__(self) -> LoopbackDns:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        """The response to ``query`` from the records as they are now."""
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        for question in query.question:
            with self._lock:
                known = self._records.get(question.name)
            if known is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
                continue
            family = {dns.rdatatype.A: 4, dns.rdatatype.AAAA: 6}.get(question.rdtype)
            matching = [a for a in known if ipaddress.ip_address(a).version == family]
            if matching:
                response.answer.append(dns.rrset.from_text_list(
                    question.name, RECORD_TTL_S, dns.rdataclass.IN, question.rdtype, matching))
        return response

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                wire, client = self._socket.recvfrom(MAX_DATAGRAM_BYTES)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(wire)
            except Exception:  # not DNS: nothing to answer
                continue
            self.queries += 1
            self._socket.sendto(self.answer(query).to_wire(), client)

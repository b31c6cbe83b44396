"""Who is on the other end of a loopback TCP connection: the kernel's socket table knows.

For a connection we accepted, the peer's own socket has our remote address as its local one and
our local address as its remote one; the kernel records the account that opened it. We ask
sock_diag (netlink) for exactly that socket: one lookup in the kernel's hash table, ~20 µs. Where
netlink is not available, /proc/net/tcp (or tcp6) is read line by line up to the one line that
matches (no full parse); the kernel still walks its whole table to produce that file, which costs
milliseconds on a busy machine, so it is only the fallback. Both run once per new connection.

The CLI asks the same question the other way round (`listener_uid`): for a connection it opened,
the socket at the far end was made by the listener that accepted it, and carries that
listener's uid, so the kernel says which account holds the port before a byte is sent.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import ipaddress
import os
import socket
import struct
import sys
from _thread import allocate_lock

PROC_TCP = "/proc/net/tcp"
PROC_TCP6 = "/proc/net/tcp6"
Address = tuple[str, int]
NETLINK_INET_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
NOCOOKIE = 0xFFFFFFFF
ALL_STATES = 0xFFFFFFFF
_REQUEST = struct.Struct("=IHHII BBBBI HH16s16sI II")  # nlmsghdr + inet_diag_req_v2
_UID_OFFSET = 16 + 64  # nlmsghdr, then inet_diag_msg's uid


def _hex4(addr: ipaddress.IPv4Address) -> str:
    # the kernel prints the 32-bit word in host byte order
    return f"{struct.unpack('=I', addr.packed)[0]:08X}"


def _hex6(addr: ipaddress.IPv6Address) -> str:
    return "".join(f"{word:08X}" for word in struct.unpack("=4I", addr.packed))


def _entry(host: str, port: int) -> tuple[str, str]:
    """(file, "ADDR:PORT") as the socket table writes this address."""
    addr = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped  # a v4 client of a dual-stack listener has a v4 socket
    if isinstance(addr, ipaddress.IPv4Address):
        return PROC_TCP, f"{_hex4(addr)}:{port:04X}"
    return PROC_TCP6, f"{_hex6(addr)}:{port:04X}"


def is_loopback(host: str) -> bool:
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


@functools.lru_cache(maxsize=1)
def unmapped_uid() -> int | None:
    """The uid the kernel shows for accounts outside our user namespace, or None in the initial
    one (then every uid is real, 65534 included).

    Inside a user namespace (systemd's PrivateUsers=, a rootless container) every account not
    mapped into it, root included, appears as this one uid: it names no account, so a peer
    carrying it is unidentified, not "nobody".
    """
    try:
        with open("/proc/self/uid_map", encoding="ascii") as mapping:
            ranges = [line.split() for line in mapping]
        with open("/proc/sys/kernel/overflowuid", encoding="ascii") as overflow:
            overflow_uid = int(overflow.read())
    except (OSError, ValueError):
        return None
    if ranges == [["0", "0", "4294967295"]]:
        return None
    return overflow_uid


def peer_uid(ours: Address, theirs: Address) -> int | None:
    """The uid owning the peer socket of our connection `ours` ⇄ `theirs`, or None.

    None: not Linux, not a loopback peer (the kernel knows nothing of remote accounts), no
    matching socket (the peer already left), or an account outside our user namespace.
    """
    uid = raw_peer_uid(ours, theirs)
    return None if uid is None or uid == unmapped_uid() else uid


def peer_is_outside(uid: int | None) -> bool:
    """True for the uid the kernel shows for an account outside our user namespace: a local
    account that is certainly neither ours nor (under systemd's PrivateUsers=yes) root."""
    return uid is not None and uid == unmapped_uid()


def raw_peer_uid(ours: Address, theirs: Address) -> int | None:
    """peer_uid, but the unmapped uid of a user namespace is returned as the kernel gives it
    (see `peer_is_outside`)."""
    if not sys.platform.startswith("linux") or not is_loopback(theirs[0]):
        return None
    try:
        table, their_entry = _entry(*theirs[:2])
        table_ours, our_entry = _entry(*ours[:2])
    except ValueError:
        return None
    if table != table_ours:
        return None
    try:
        return _sock_diag(theirs, ours)
    except (OSError, ValueError, struct.error):
        # no netlink here (a sandbox, another kernel): read the table instead
        return _scan(table, f" {their_entry} {our_entry} ")


def _packed(host: str) -> tuple[int, bytes]:
    addr = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if isinstance(addr, ipaddress.IPv4Address):
        return socket.AF_INET, addr.packed.ljust(16, b"\0")
    return socket.AF_INET6, addr.packed


_NETLINK_LOCK = allocate_lock()  # one lock: the threading module costs a millisecond more
_netlink: list[socket.socket] = []  # one socket, opened on first use and kept


def _ask(request: bytes) -> bytes:
    """One request and its reply on the kept netlink socket (a new one after any error)."""
    if not _netlink:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                             NETLINK_INET_DIAG)
        sock.settimeout(1.0)
        _netlink.append(sock)
    sock = _netlink[0]
    try:
        sock.sendto(request, (0, 0))
        return sock.recv(8192)
    except OSError:
        _netlink.clear()
        with contextlib.suppress(OSError):
            sock.close()
        raise


def _sock_diag(theirs: Address, ours: Address) -> int | None:
    """The uid of the socket whose local end is `theirs` and remote end `ours`, via sock_diag.

    None when the kernel has no such socket; OSError when netlink cannot be used at all.
    """
    family, src = _packed(theirs[0])
    _, dst = _packed(ours[0])
    request = _REQUEST.pack(_REQUEST.size, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 1, 0,
                            family, socket.IPPROTO_TCP, 0, 0, ALL_STATES,
                            socket.htons(theirs[1]), socket.htons(ours[1]), src, dst, 0,
                            NOCOOKIE, NOCOOKIE)
    with _NETLINK_LOCK:
        reply = _ask(request)
    length, kind = struct.unpack_from("=IH", reply)
    if kind == NLMSG_ERROR:
        (code,) = struct.unpack_from("=i", reply, 16)
        if -code == errno.ENOENT:
            return None
        raise OSError(-code, os.strerror(-code))
    if kind != SOCK_DIAG_BY_FAMILY or length < _UID_OFFSET + 4:
        raise ValueError("unexpected sock_diag reply")
    (uid,) = struct.unpack_from("=I", reply, _UID_OFFSET)
    return int(uid)


def _scan(table: str, needle: str) -> int | None:
    try:
        with open(table, encoding="ascii", errors="replace") as lines:
            for line in lines:
                if needle in line:
                    fields = line.split()
                    return int(fields[7]) if len(fields) > 7 and fields[7].isdigit() else None
    except OSError:
        return None
    return None


def socket_peer_uid(sock: socket.socket) -> int | None:
    """peer_uid for a connected socket object (asyncio's transports expose theirs).

    For a socket we connected (the client side), this is `listener_uid`.
    """
    try:
        return peer_uid(sock.getsockname()[:2], sock.getpeername()[:2])
    except OSError:
        return None


def listener_uid(sock: socket.socket) -> int | None:
    """The uid of the account whose listening socket accepted our connected `sock`, or None.

    The kernel creates the server's end of a TCP connection from the listener (in its accept
    queue, even before the server calls accept()) and gives it the listener's uid, so this is
    the owner of the listener we reached, with no race against a port changing hands between a
    check and the connect. None where peer_uid gives None (not Linux, not loopback, outside our
    user namespace).
    """
    return socket_peer_uid(sock)

"""The offload drains held to the model again, with the TUN read and written through io_uring.

Every test of test_offload_drain_udp and test_offload_drain_tun runs here once more, with the
C forwarder taking io_uring (multishot, and batch) on the fake TUN at its first drain: GRO frames
go out as one writev each of head and member slices through the ring, a kernel peer's
super-packets keep their place among them, super-packets are read from the ring's buffers.
The model does not change: only the syscalls differ.
"""

from __future__ import annotations

import socket

import pytest

from dataplane.fastpath import cnative
from dataplane.fastpath.types import URING_BATCH, URING_MULTISHOT

from test_offload_drain_tun import *  # noqa: F403  (the tests and their fixtures)
from test_offload_drain_udp import *  # noqa: F403

# Not again here: they count read() syscalls (tests/wire/test_tun_uring.py counts the ring's), drain
# another descriptor than the one io_uring was taken on, or feed a zero-length read, which a TUN
# never hands out and the ring takes as nothing read.
del test_tso_super_packet_is_cut_and_sent_as_one_run  # noqa: F405, F821
del test_a_read_error_raises  # noqa: F405, F821
del test_a_read_shorter_than_the_virtio_header_is_truncated  # noqa: F405, F821

_Plain = cnative.Forwarder


def _uring_forwarder(want: int) -> type:
    class UringForwarder(_Plain):  # type: ignore[misc, valid-type]
        """Takes io_uring on the TUN it is first drained with; the mode must be granted."""

        _taken: int | None = None

        def _take(self, tun_fd: int) -> None:
            if self._taken is None:
                self._taken = self.tun_uring(tun_fd, want)
                assert self._taken == want, f"kernel gave io_uring mode {self._taken}"

        def drain_tun(self, tun_fd: int, sock: socket.socket, budget: int) -> int:
            self._take(tun_fd)
            return int(super().drain_tun(tun_fd, sock, budget))

        def drain_udp(self, sock: socket.socket, tun_fd: int, budget: int) -> int:
            self._take(tun_fd)
            return int(super().drain_udp(sock, tun_fd, budget))

    return UringForwarder


@pytest.fixture(autouse=True, params=[URING_MULTISHOT, URING_BATCH], ids=["multishot", "batch"])
def through_uring(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cnative, "Forwarder", _uring_forwarder(request.param))

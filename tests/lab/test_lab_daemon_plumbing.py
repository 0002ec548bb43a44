"""How the lab runs daemons, checked now with a stand-in daemon (tests/lab/fake_daemon.py):
readiness through subnet.env, pids, failures with the daemon's log, stopping, and the mixed
lab's lease exchange with kernel nodes. Traffic through our daemon is test_lab_daemon.py."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from lab_helpers import lab_cli, leftovers

from dataplane.lab import Lab, LabError, netns

pytestmark = pytest.mark.netns

FAKE = [sys.executable, str(Path(__file__).with_name("fake_daemon.py"))]


def test_daemon_nodes_are_ready_tracked_and_stopped(prefix: str) -> None:
    lab = Lab(prefix, nodes=2, pods=1, backend="udp", daemon_program=FAKE, fastpath="python")
    try:
        lab.up()
        pids = lab.daemon_pids()
        assert sorted(pids) == [f"{prefix}-n1", f"{prefix}-n2"]
        for node in lab.nodes:
            # The pid is the daemon's own (ip netns exec leaves no wrapper), in the node's netns.
            assert pids[node.name] in netns.pids_in(node.name)
            command_line = node.log_file.read_text().splitlines()[0]
            assert "--fastpath python" in command_line and "--ip-masq" in command_line
            pod = lab.pods_on(node)[0]
            assert pod.ip in node.subnet      # from the daemon's subnet.env, through CNI
            link = lab.exec(pod, ["ip", "link", "show", "eth0"]).stdout
            assert "mtu 1472" in link         # udp: 1500 - 28, from FLANNEL_MTU

        # What the benchmark harness does: pin a daemon, start a pinned process in a pod.
        cpu = max(os.sched_getaffinity(0))
        Lab.pin(pids[f"{prefix}-n1"], {cpu})
        assert os.sched_getaffinity(pids[f"{prefix}-n1"]) == {cpu}
        sleeper = lab.popen(lab.pod(2, 1), ["sleep", "30"], cpus={cpu})
        comm = Path(f"/proc/{sleeper.pid}/comm")
        deadline = time.monotonic() + 5       # taskset and ip exec into sleep, same pid
        while comm.read_text().strip() != "sleep" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert comm.read_text().strip() == "sleep"
        assert os.sched_getaffinity(sleeper.pid) == {cpu}

        # Restart one daemon with the other fast path: a new process, ready again.
        lab.stop_daemon(1)
        assert f"{prefix}-n1" not in lab.daemon_pids()
        new_pid = lab.start_daemon(1, fastpath="c")
        assert new_pid != pids[f"{prefix}-n1"] and lab.daemon_pids()[f"{prefix}-n1"] == new_pid
        commands = [ln for ln in lab.node(1).log_file.read_text().splitlines()
                    if ln.startswith("# ")]
        assert "--fastpath c" in commands[-1] and "--fastpath python" in commands[0]
        pids = lab.daemon_pids()

        out = lab_cli("status", "--prefix", prefix, "--no-ping").stdout
        assert out.count(" alive") == 2, out

        # Another process (the CLI) stops them: SIGTERM to the recorded pids.
        lab_cli("down", "--prefix", prefix)
        assert not any(netns.alive(pid) for pid in pids.values())
        assert sleeper.wait(timeout=5) < 0          # what ran in a pod was stopped too
        assert leftovers(prefix) == []
    finally:
        lab.down()


def test_mixed_lab_exchanges_leases_with_kernel_nodes(prefix: str) -> None:
    with Lab(prefix, nodes=3, pods=1, backend="vxlan", kernel_nodes=1,
             daemon_program=FAKE) as lab:
        n1, n2, n3 = lab.nodes
        assert [n.backend for n in lab.nodes] == ["vxlan", "vxlan", "kernel-vxlan"]
        # The kernel node's lease was in the store before our daemons started...
        for node in (n1, n2):
            assert "10.244.3.0-24" in node.log_file.read_text()
        # ...and the kernel node learnt our daemons' VtepMACs from theirs.
        neigh = lab.exec(n3, ["ip", "neigh", "show", "dev", "flannel.1"]).stdout
        fdb = lab.exec(n3, ["bridge", "fdb", "show", "dev", "flannel.1"]).stdout
        for peer in (n1, n2):
            assert peer.vtep_mac and peer.vtep_mac.startswith("0e:fa:")
            assert f"{peer.subnet.network_address} lladdr {peer.vtep_mac} PERMANENT" in neigh
            assert f"{peer.vtep_mac} dst {peer.underlay_ip} self permanent" in fdb
        assert "flannel.1" not in lab.exec(n1, ["ip", "link"]).stdout   # the daemon's job


def test_a_daemon_that_dies_fails_up_with_its_log(prefix: str) -> None:
    lab = Lab(prefix, nodes=2, pods=1, backend="vxlan", daemon_program=FAKE,
              daemon_args=["--behave", "exit"])
    with pytest.raises(LabError, match=r"exited with status 3(.|\n)*simulated failure"):
        lab.up()
    assert leftovers(prefix) == []       # a failed up removes what it built


def test_a_daemon_that_never_gets_ready_times_out(prefix: str) -> None:
    lab = Lab(prefix, nodes=1, pods=1, backend="udp", daemon_program=FAKE,
              daemon_args=["--behave", "hang"], daemon_timeout=1.0)
    with pytest.raises(LabError, match="did not write its subnet.env within 1 s"):
        lab.up(keep_on_error=True)
    pid = lab.nodes[0].pid
    assert pid is not None and netns.alive(pid)     # kept for inspection, as asked
    assert leftovers(prefix) != []
    lab.down()
    assert not netns.alive(pid)
    assert leftovers(prefix) == []

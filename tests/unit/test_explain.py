"""`dataplane explain`: the layout tables agree with scapy's dissection of the same bytes."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import bind_layers

from dataplane import explain
from dataplane.cli import main
from dataplane.layouts import ETHERNET, IPV4
from dataplane.layouts import TCP as TCP_LAYOUT
from dataplane.layouts import UDP as UDP_LAYOUT
from dataplane.layouts import VXLAN as VXLAN_LAYOUT

bind_layers(UDP, VXLAN, dport=8472)

# our field name -> scapy field name, where they differ
SCAPY_NAMES = {"total_length": "len", "length": "len", "frag_offset": "frag", "protocol": "proto",
               "checksum": "chksum", "src_port": "sport", "dst_port": "dport",
               "data_offset": "dataofs", "urgent": "urgptr", "vni": "vni"}


def _check(layout, header: bytes, scapy_layer) -> None:
    for field in layout.fields:
        name = SCAPY_NAMES.get(field.name, field.name)
        if name in ("flags", "reserved1", "reserved2", "rest"):
            continue        # scapy models these as flag sets or splits them differently
        expected = getattr(scapy_layer, name)
        if isinstance(expected, str):                   # MAC and IP addresses
            assert field.render(header) == expected, field.name
        else:
            assert field.read(header) == int(expected), field.name


@pytest.mark.parametrize("impl", ["c", "python"])
def test_vxlan_layers_match_scapy(impl):
    segments = explain.build("vxlan", 1500, None, 7, impl)
    wire = b"".join(s.data for s in segments)
    pkt = IP(wire)
    assert pkt[VXLAN].vni == 7 and pkt[UDP].dport == 8472
    by_label = {s.label: s.data for s in segments}
    _check(IPV4, by_label["outer IPv4"], pkt[IP])
    _check(UDP_LAYOUT, by_label["outer UDP"], pkt[UDP])
    _check(VXLAN_LAYOUT, by_label["VXLAN"], pkt[VXLAN])
    _check(ETHERNET, by_label["inner Ethernet"], pkt[Ether])
    _check(IPV4, by_label["inner IPv4 (the pod's packet)"], pkt[Ether][IP])
    _check(TCP_LAYOUT, by_label["inner TCP"], pkt[Ether][TCP])
    assert len(wire) == 1500


def test_udp_packet_is_raw_ip_in_udp_with_valid_checksums():
    segments = explain.build("udp", 1500, 100, 1, "c")
    wire = b"".join(s.data for s in segments)
    pkt = IP(wire)
    assert pkt[UDP].dport == 8285 and pkt[UDP].sport == 8285
    inner = IP(bytes(pkt[UDP].payload))
    assert inner.src == explain.POD_SRC and inner.dst == explain.POD_DST
    assert len(inner[TCP].payload) == 100
    # scapy recomputes every checksum we wrote when they are deleted: same bytes back
    for cls in (IP, UDP):
        rebuilt = IP(wire)
        del rebuilt[cls].chksum
        assert bytes(rebuilt) == wire, cls.__name__
    inner_bytes = bytes(pkt[UDP].payload)
    for cls in (IP, TCP):
        rebuilt = IP(inner_bytes)
        del rebuilt[cls].chksum
        assert bytes(rebuilt) == inner_bytes, cls.__name__


def test_output_names_overhead_and_mtu(capsys):
    assert main(["explain", "--backend", "vxlan", "--mtu", "9000"]) == 0
    out = capsys.readouterr().out
    assert "overhead: 50 bytes" in out and "pod MTU 8950" in out
    assert main(["explain", "--backend", "udp"]) == 0
    out = capsys.readouterr().out
    assert "overhead: 28 bytes" in out and "pod MTU 1472" in out


def test_bad_arguments_are_refused(capsys):
    assert main(["explain", "--backend", "udp", "--mtu", "50"]) == 1
    assert "--mtu 50" in capsys.readouterr().err
    assert main(["explain", "--backend", "udp", "--payload", "2000"]) == 1
    assert "--payload 2000" in capsys.readouterr().err

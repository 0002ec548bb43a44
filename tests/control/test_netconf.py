"""flannel's net-conf.json: defaults as flannel computes them, and errors with their line."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataplane.netconf import ConfigError, NetworkConfig, load_network_config, parse_network_config


def test_minimal_config_gets_flannel_defaults() -> None:
    cfg = parse_network_config('{"Network": "10.244.0.0/16"}')
    assert cfg == NetworkConfig(
        network=IPv4Network("10.244.0.0/16"), subnet_len=24,
        subnet_min=IPv4Address("10.244.1.0"), subnet_max=IPv4Address("10.244.255.0"),
        backend_type="udp", port=8285, vni=1, backend={"Type": "udp"})
    assert cfg.subnet_size == 256


def test_full_vxlan_config() -> None:
    cfg = parse_network_config("""{
      "Network": "10.244.0.0/16",
      "SubnetLen": 25,
      "SubnetMin": "10.244.8.0",
      "SubnetMax": "10.244.20.128",
      "Backend": {"Type": "vxlan", "VNI": 42, "Port": 4789, "DirectRouting": false}
    }""")
    assert (cfg.subnet_len, str(cfg.subnet_min), str(cfg.subnet_max)) == \
        (25, "10.244.8.0", "10.244.20.128")
    assert (cfg.backend_type, cfg.port, cfg.vni) == ("vxlan", 4789, 42)
    assert cfg.backend == {"Type": "vxlan", "VNI": 42, "Port": 4789, "DirectRouting": False}


@pytest.mark.parametrize("backend, port", [("udp", 8285), ("vxlan", 8472)])
def test_default_port_depends_on_backend(backend: str, port: int) -> None:
    cfg = parse_network_config(json.dumps({"Network": "10.1.0.0/16", "Backend": {"Type": backend}}))
    assert (cfg.port, cfg.vni) == (port, 1)


@pytest.mark.parametrize("network, subnet_len, smin, smax", [
    ("10.244.0.0/16", 24, "10.244.1.0", "10.244.255.0"),
    ("10.0.0.0/8", 24, "10.0.1.0", "10.255.255.0"),
    ("10.244.0.0/22", 24, "10.244.1.0", "10.244.3.0"),
    ("10.244.0.0/24", 26, "10.244.0.64", "10.244.0.192"),   # small networks: prefix + 2
    ("10.244.0.0/28", 30, "10.244.0.4", "10.244.0.12"),
])
def test_subnet_len_and_range_defaults(network: str, subnet_len: int, smin: str, smax: str) -> None:
    cfg = parse_network_config(json.dumps({"Network": network}))
    assert (cfg.subnet_len, str(cfg.subnet_min), str(cfg.subnet_max)) == (subnet_len, smin, smax)


def test_subnet_len_zero_means_default() -> None:
    assert parse_network_config('{"Network": "10.1.0.0/16", "SubnetLen": 0}').subnet_len == 24


def test_host_bits_are_dropped_like_go() -> None:
    assert parse_network_config('{"Network": "10.244.3.7/16"}').network == \
        IPv4Network("10.244.0.0/16")


def test_keys_match_case_insensitively_like_go() -> None:
    cfg = parse_network_config('{"network": "10.5.0.0/16", "subnetlen": 26, '
                               '"backend": {"type": "vxlan", "vni": 7}}')
    assert (str(cfg.network), cfg.subnet_len, cfg.backend_type, cfg.vni) == \
        ("10.5.0.0/16", 26, "vxlan", 7)


def test_to_json_parses_back_to_the_same_config() -> None:
    cfg = parse_network_config('{"Network": "10.9.0.0/16", "SubnetMin": "10.9.4.0", '
                               '"Backend": {"Type": "vxlan", "VNI": 3}}')
    assert parse_network_config(cfg.to_json()) == cfg


# Each bad config: the text, the line the error must name, and words the message must contain.
BAD = [
    ('{\n  "Network": "10.244.0.0/16",\n}', 3, ["invalid JSON", "column"]),
    ('{\n  "Network": "10.244.0.0/16"\n  "SubnetLen": 24\n}', 3, ["invalid JSON"]),
    ('{\n  "Network": "10.244.0.0/33"\n}', 2, ["Network", "prefix length", "33"]),
    ('{\n  "Network": "10.244.0.0"\n}', 2, ["Network", "prefix length"]),
    ('{\n  "Network": "10.244.0/16"\n}', 2, ["Network", "not an IPv4 address"]),
    ('{\n  "Network": "fc00::/48"\n}', 2, ["Network", "IPv6"]),
    ('{\n  "Network": 10\n}', 2, ["Network", "must be a string"]),
    ('\n{\n  "SubnetLen": 24\n}', 2, ["Network", "required"]),
    ('{\n  "Network": "10.244.0.0/29"\n}', 2, ["Network", "too small", "/28"]),
    ('{\n  "Network": "10.244.0.0/16",\n  "SubnetLen": 31\n}', 3, ["SubnetLen", "too large"]),
    ('{\n  "Network": "10.244.0.0/16",\n  "SubnetLen": 17\n}', 3, ["SubnetLen", "too small", "18"]),
    ('{\n  "Network": "10.244.0.0/16",\n  "SubnetLen": "24"\n}', 3, ["SubnetLen", "whole number"]),
    ('{\n  "Network": "10.244.0.0/16",\n  "SubnetLen": 24.5\n}', 3, ["SubnetLen", "whole number"]),
    ('{\n  "Network": "10.244.0.0/16",\n  "SubnetLen": -1\n}', 3, ["SubnetLen", "negative"]),
    ('{\n  "Network": "10.244.0.0/16",\n\n  "SubnetMin": "10.245.1.0"\n}', 4,
     ["SubnetMin", "not in the network"]),
    ('{\n  "Network": "10.244.0.0/16",\n  "SubnetMin": "10.244.1.7"\n}', 3,
     ["SubnetMin", "boundary"]),
    ('{\n  "Network": "10.244.0.0/16",\n  "SubnetMax": "10.243.0.0"\n}', 3,
     ["SubnetMax", "not in the network"]),
    ('{\n  "Network": "10.244.0.0/16",\n  "SubnetMax": 7\n}', 3, ["SubnetMax", "string"]),
    ('{\n  "Network": "10.244.0.0/16",\n  "SubnetMin": "10.244.9.0",\n'
     '  "SubnetMax": "10.244.8.0"\n}', 3, ["SubnetMin", "above SubnetMax"]),
    ('{\n  "Network": "10.244.0.0/16",\n  "Backend": {\n    "Type": "wireguard"\n  }\n}', 4,
     ["Backend.Type", "unknown backend type", "wireguard"]),
    ('{\n  "Network": "10.244.0.0/16",\n  "Backend": {"Port": 1}\n}', 3,
     ["Backend", "Type is required"]),
    ('{\n  "Network": "10.244.0.0/16",\n  "Backend": "vxlan"\n}', 3, ["Backend", "object"]),
    ('{\n  "Network": "10.244.0.0/16",\n  "Backend": {"Type": "udp",\n    "Port": 70000}\n}', 4,
     ["Backend.Port", "70000"]),
    ('{\n  "Network": "10.244.0.0/16",\n  "Backend": {"Type": "vxlan",\n\n  "VNI": 16777216}\n}',
     5, ["Backend.VNI", "16777216"]),
    ('{\n  "Network": "10.244.0.0/16",\n  "EnableIPv6": true\n}', 3, ["EnableIPv6", "IPv4 only"]),
    ('[1, 2]', 1, ["JSON object"]),
]


@pytest.mark.parametrize("text, line, words", BAD)
def test_errors_name_field_and_line(text: str, line: int, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_network_config(text, source="net-conf.json")
    message = str(info.value)
    assert info.value.line == line, message
    assert message.startswith(f"net-conf.json, line {line}"), message
    for word in words:
        assert word in message, message


def test_syntax_error_has_column() -> None:
    with pytest.raises(ConfigError) as info:
        parse_network_config('{"Network": "10.0.0.0/16" "SubnetLen": 24}')
    assert (info.value.line, info.value.column) == (1, 27)


def test_empty_config() -> None:
    with pytest.raises(ConfigError, match="empty config"):
        parse_network_config("  \n")


def test_missing_file_names_the_path(tmp_path) -> None:
    path = tmp_path / "net-conf.json"
    with pytest.raises(ConfigError, match=str(path)):
        load_network_config(str(path))
    path.write_text('{"Network": "10.7.0.0/16"}')
    assert str(load_network_config(str(path)).network) == "10.7.0.0/16"


@settings(max_examples=300, deadline=None)
@given(prefix=st.integers(0, 28), subnet_len=st.one_of(st.just(0), st.integers(1, 32)),
       base=st.integers(0, 2**32 - 1))
def test_valid_configs_always_satisfy_flannels_invariants(prefix: int, subnet_len: int,
                                                          base: int) -> None:
    network = IPv4Network((base, prefix), strict=False)
    text = json.dumps({"Network": str(network), "SubnetLen": subnet_len})
    try:
        cfg = parse_network_config(text)
    except ConfigError:
        assert subnet_len > 30 or subnet_len < prefix + 2
        return
    assert cfg.network.prefixlen + 2 <= cfg.subnet_len <= 30
    for bound in (cfg.subnet_min, cfg.subnet_max):
        assert bound in cfg.network and int(bound) % cfg.subnet_size == 0
    assert cfg.subnet_min == cfg.network.network_address + cfg.subnet_size
    assert int(cfg.subnet_max) + cfg.subnet_size - 1 == int(cfg.network.broadcast_address)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False)
    | st.text(max_size=20) | st.sampled_from(["10.244.0.0/16", "10.244.1.0", "vxlan", "udp"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["Network", "SubnetLen", "SubnetMin", "SubnetMax", "Backend", "Type",
                         "Port", "VNI", "network", "x", "DirectRouting", "MTU", "MacPrefix",
                         "GBP", "Learning", "EnableIPv4", "EnableIPv6", "IPv6Network",
                         "IPv6SubnetLen"]), inner, max_size=5),
    max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(doc=JSON)
def test_any_json_gives_a_config_or_a_config_error(doc: object) -> None:
    try:
        parse_network_config(json.dumps(doc, indent=1))
    except ConfigError as exc:
        assert exc.line is not None and exc.line >= 1


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=60))
def test_any_text_gives_a_config_or_a_config_error(text: str) -> None:
    try:
        parse_network_config(text)
    except ConfigError:
        pass


# ---- flannel's options, exactly (pkg/subnet/config.go, pkg/backend/udp, pkg/backend/vxlan) ----

@pytest.mark.parametrize("written, stored", [("VXLAN", "vxlan"), ("Vxlan", "vxlan"),
                                             ("Udp", "udp"), ("UDP", "udp")])
def test_backend_type_is_case_insensitive_and_stored_lower_case(written: str, stored: str) -> None:
    cfg = parse_network_config(json.dumps({"Network": "10.1.0.0/16",
                                           "Backend": {"Type": written}}))
    assert cfg.backend_type == stored
    assert cfg.port == {"udp": 8285, "vxlan": 8472}[stored]


def test_vxlan_options_are_typed_fields() -> None:
    cfg = parse_network_config(json.dumps({"Network": "10.1.0.0/16", "Backend": {
        "Type": "vxlan", "DirectRouting": True, "MTU": 9000, "MacPrefix": "0E-2A",
        "GBP": False, "Learning": False, "VNI": 0}}))
    assert (cfg.direct_routing, cfg.mtu, cfg.mac_prefix, cfg.vni) == \
        (True, 9000, bytes([0x0E, 0x2A]), 0)
    assert cfg.warnings == ()


def test_vxlan_option_defaults() -> None:
    cfg = parse_network_config('{"Network": "10.1.0.0/16", "Backend": {"Type": "vxlan"}}')
    assert (cfg.direct_routing, cfg.mtu, cfg.mac_prefix) == (False, None, None)


def test_option_names_match_case_insensitively() -> None:
    cfg = parse_network_config('{"Network": "10.1.0.0/16", "Backend": {"type": "vxlan", '
                               '"directRouting": true, "mtu": 1400, "macprefix": "aa-bb"}}')
    assert (cfg.direct_routing, cfg.mtu, cfg.mac_prefix) == (True, 1400, b"\xaa\xbb")


def test_vxlan_port_zero_is_the_kernel_default_as_in_flannel() -> None:
    cfg = parse_network_config('{"Network": "10.1.0.0/16", "Backend": {"Type": "vxlan", '
                               '"Port": 0}}')
    assert cfg.port == 8472


def test_null_options_are_absent_as_in_go() -> None:
    cfg = parse_network_config('{"Network": "10.1.0.0/16", "EnableIPv4": null, '
                               '"EnableIPv6": null, "IPv6Network": null, "Backend": '
                               '{"Type": "vxlan", "DirectRouting": null, "MTU": null}}')
    assert (cfg.direct_routing, cfg.mtu) == (False, None)


def test_accepted_top_level_keys() -> None:
    cfg = parse_network_config('{"Network": "10.1.0.0/16", "EnableIPv4": true, '
                               '"EnableIPv6": false, "EnableNFTables": true, "IPv6Network": "", '
                               '"IPv6SubnetLen": 0, "Backend": {"Type": "udp", "Port": 8000}}')
    assert (cfg.port, cfg.warnings) == (8000, ())


@pytest.mark.parametrize("text, line, field", [
    ('{\n  "Network": "10.1.0.0/16",\n  "Color": "blue"\n}', 3, "Color"),
    ('{\n  "Network": "10.1.0.0/16",\n  "Backend": {"Type": "vxlan",\n  "DirectRoute": true}\n}',
     4, "Backend.DirectRoute"),
    ('{\n  "Network": "10.1.0.0/16",\n  "Backend": {"Type": "udp",\n\n  "PSK": "x"}\n}',
     5, "Backend.PSK"),
    ('{\n  "Network": "10.1.0.0/16",\n  "Backend": {"Type": "vxlan",\n  "Name": "vx0"}\n}',
     4, "Backend.Name"),
])
def test_unknown_keys_are_warned_about_by_name_and_line(text: str, line: int, field: str) -> None:
    cfg = parse_network_config(text, source="net-conf.json")
    (warning,) = cfg.warnings
    assert warning.startswith(f"net-conf.json, line {line}: {field}: "), warning
    assert "ignored" in warning


# Refused options: the text, the line, the field, and a word of the reason.
REFUSED = [
    ('{\n  "Network": "10.1.0.0/16",\n  "Backend": {"Type": "vxlan",\n  "GBP": true}\n}', 4,
     "Backend.GBP", "mark"),
    ('{\n  "Network": "10.1.0.0/16",\n  "Backend": {"Type": "vxlan",\n  "Learning": true}\n}',
     4, "Backend.Learning", "learn"),
    ('{\n  "Network": "10.1.0.0/16",\n  "Backend": {"Type": "vxlan",\n  "GBP": "yes"}\n}', 4,
     "Backend.GBP", "true or false"),
    ('{\n  "Network": "10.1.0.0/16",\n  "Backend": {"Type": "vxlan",\n  "DirectRouting": 1}\n}',
     4, "Backend.DirectRouting", "true or false"),
    ('{\n  "Network": "10.1.0.0/16",\n  "Backend": {"Type": "vxlan",\n  "MTU": 100}\n}', 4,
     "Backend.MTU", "118"),
    ('{\n  "Network": "10.1.0.0/16",\n  "Backend": {"Type": "vxlan",\n  "MTU": 70000}\n}', 4,
     "Backend.MTU", "65535"),
    ('{\n  "Network": "10.1.0.0/16",\n  "Backend": {"Type": "vxlan",\n  "MTU": "1500"}\n}', 4,
     "Backend.MTU", "whole number"),
    ('{\n  "Network": "10.1.0.0/16",\n  "Backend": {"Type": "vxlan",\n  "MacPrefix": "0E2A"}\n}',
     4, "Backend.MacPrefix", "0E-2A"),
    ('{\n  "Network": "10.1.0.0/16",\n  "Backend": {"Type": "vxlan",\n  "MacPrefix": "zz-2A"}\n}',
     4, "Backend.MacPrefix", "hex"),
    ('{\n  "Network": "10.1.0.0/16",\n  "Backend": {"Type": "vxlan",\n  "MacPrefix": "01-00"}\n}',
     4, "Backend.MacPrefix", "multicast"),
    ('{\n  "Network": "10.1.0.0/16",\n  "Backend": {"Type": "vxlan",\n  "MacPrefix": 14}\n}',
     4, "Backend.MacPrefix", "0E-2A"),
    ('{\n  "Network": "10.1.0.0/16",\n  "Backend": {"Type": "vxlan",\n  "VNI": -1}\n}', 4,
     "Backend.VNI", "negative"),
    ('{\n  "Network": "10.1.0.0/16",\n  "Backend": {"Type": "vxlan",\n  "Port": 1.5}\n}', 4,
     "Backend.Port", "whole number"),
    ('{\n  "Network": "10.1.0.0/16",\n  "Backend": {"Type": "udp",\n  "Port": 0}\n}', 4,
     "Backend.Port", "not a UDP port"),
    ('{\n  "Network": "10.1.0.0/16",\n  "Backend": {"Type": "udp",\n  "VNI": 1}\n}', 4,
     "Backend.VNI", "vxlan option"),
    ('{\n  "Network": "10.1.0.0/16",\n  "Backend": {"Type": "udp",\n  "DirectRouting": true}\n}',
     4, "Backend.DirectRouting", "vxlan option"),
    ('{\n  "Network": "10.1.0.0/16",\n  "Backend": {"Type": "udp",\n  "mtu": 1400}\n}', 4,
     "Backend.mtu", "vxlan option"),
    ('{\n  "Network": "10.1.0.0/16",\n  "Backend": {"Type": "udp",\n  "MacPrefix": "0E-2A"}\n}',
     4, "Backend.MacPrefix", "vxlan option"),
    ('{\n  "Network": "10.1.0.0/16",\n  "Backend": {"Type": "udp",\n  "GBP": false}\n}', 4,
     "Backend.GBP", "vxlan option"),
    ('{\n  "Network": "10.1.0.0/16",\n  "Backend": {\n    "Type": "host-gw"}\n}', 4,
     "Backend.Type", "unknown backend type"),
    ('{\n  "Network": "10.1.0.0/16",\n  "Backend": {\n    "Type": 7}\n}', 4,
     "Backend.Type", "must be a string"),
    ('{\n  "Network": "10.1.0.0/16",\n  "EnableIPv4": false\n}', 3, "EnableIPv4", "IPv4 only"),
    ('{\n  "Network": "10.1.0.0/16",\n  "EnableIPv4": 1\n}', 3, "EnableIPv4", "true or false"),
    ('{\n  "Network": "10.1.0.0/16",\n  "enableipv6": true\n}', 3, "enableipv6", "IPv6"),
    ('{\n  "Network": "10.1.0.0/16",\n  "IPv6Network": "fc00::/48"\n}', 3, "IPv6Network",
     "not implemented"),
    ('{\n  "Network": "10.1.0.0/16",\n  "IPv6Network": 5\n}', 3, "IPv6Network", "string"),
    ('{\n  "Network": "10.1.0.0/16",\n  "IPv6SubnetLen": 64\n}', 3, "IPv6SubnetLen",
     "not implemented"),
    ('{\n  "Network": "10.1.0.0/16",\n  "IPv6SubnetMin": "fc00:0:0:1::"\n}', 3, "IPv6SubnetMin",
     "not implemented"),
    ('{\n  "Network": "10.1.0.0/16",\n  "IPv6SubnetMax": "fc00:0:0:ff::"\n}', 3, "IPv6SubnetMax",
     "not implemented"),
]


@pytest.mark.parametrize("text, line, field, word", REFUSED)
def test_refused_options_name_field_line_and_reason(text: str, line: int, field: str,
                                                     word: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_network_config(text, source="net-conf.json")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"net-conf.json, line {line}: {field}: "), message
    assert info.value.field == field
    assert word in message, message

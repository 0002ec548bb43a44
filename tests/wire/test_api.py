"""The two hot-path implementations expose one API (fastpath/api.py), and every C constant has
its Python twin with the same value."""

from __future__ import annotations

import inspect

import pytest

from dataplane import drops, fastpath
from dataplane.fastpath import _stub, api, types

C = fastpath.load("c")
P = fastpath.load("python")
IMPLS = (C, P)


def members(proto: type) -> set[str]:
    """What a Protocol declares: its methods, properties and annotated attributes."""
    names = {n for n in vars(proto) if not n.startswith("_")}
    names |= set(getattr(proto, "__annotations__", {}))
    return names | ({"__len__"} if "__len__" in vars(proto) else set())


def public(module) -> set[str]:
    """Functions and classes a module (or a package's own submodules) defines, plus its NAME
    (imports from elsewhere are not API)."""
    own = {n for n, v in vars(module).items() if not n.startswith("_")
           and (inspect.isfunction(v) or inspect.isclass(v))
           and (v.__module__ == module.__name__
                or v.__module__.startswith(module.__name__ + ".") and hasattr(module, "__path__"))}
    return own | ({"NAME"} if hasattr(module, "NAME") else set())


def params(fn) -> list[tuple[str, object, object]]:
    """Parameter names, kinds and defaults (annotations are strings under both twins);
    a protocol's `...` default stands for "has a default"."""
    sig = inspect.signature(fn)
    out = []
    for p in sig.parameters.values():
        if p.name == "self":
            continue
        has_default = p.default is not inspect.Parameter.empty
        out.append((p.name, p.kind, has_default))
    return out


def defaults(fn) -> dict[str, object]:
    return {p.name: p.default for p in inspect.signature(fn).parameters.values()
            if p.default is not inspect.Parameter.empty and p.default is not Ellipsis}


@pytest.mark.parametrize("module", IMPLS, ids=lambda m: m.NAME)
def test_a_module_defines_exactly_the_protocol(module):
    assert public(module) == members(api.Fastpath)


@pytest.mark.parametrize("module", IMPLS, ids=lambda m: m.NAME)
@pytest.mark.parametrize("name", sorted(
    n for n in members(api.Fastpath) if inspect.isfunction(getattr(api.Fastpath, n, None))))
def test_functions_have_the_protocol_signature(module, name):
    declared = getattr(api.Fastpath, name)
    actual = getattr(module, name)
    assert params(actual) == params(declared), name
    # a default the protocol spells out must be the twin's default too
    for key, value in defaults(declared).items():
        assert defaults(actual)[key] == value, (name, key)


def test_the_twins_have_the_same_defaults():
    for name in members(api.Fastpath):
        if inspect.isfunction(getattr(C, name, None)):
            assert defaults(getattr(C, name)) == defaults(getattr(P, name)), name


@pytest.mark.parametrize("module", IMPLS, ids=lambda m: m.NAME)
@pytest.mark.parametrize(("cls", "proto"), [("Forwarder", api.Forwarder),
                                            ("RouteTable", api.RouteTable)])
def test_classes_have_the_protocol_methods(module, cls, proto):
    klass = getattr(module, cls)
    mine = {n for n in vars(klass) if not n.startswith("_") or n == "__len__"}
    declared = members(proto)
    # attributes the protocol declares may be set in __init__; methods must be on the class
    assert mine <= declared, f"{module.NAME}.{cls}: {sorted(mine - declared)} not in the protocol"
    for name in declared:
        spec = getattr(proto, name, None)
        if inspect.isfunction(spec):
            assert params(getattr(klass, name)) == params(spec), (cls, name)
        elif isinstance(spec, property):
            assert isinstance(getattr(klass, name), property), (cls, name)


def test_forwarder_instances_carry_the_declared_attributes():
    config = types.ForwarderConfig(mode=types.MODE_UDP, local_subnet="10.244.1.0/24", port=8285)
    for module in IMPLS:
        fwd = module.Forwarder(config)
        assert fwd.impl == module.NAME
        assert fwd.config is config


def python_twin(c_name: str) -> object:
    """Where the Python side keeps the value of DP_<name>."""
    name = c_name.removeprefix("DP_")
    if name == "OK":
        return drops.Drop.NONE
    if name.startswith("DROP_"):
        return drops.Drop[name.removeprefix("DROP_")]
    if name.startswith("ACT_"):
        return types.Action[name.removeprefix("ACT_")]
    if name in ("EGRESS", "INGRESS"):
        return drops.Direction[name]
    if name == "MAX_DROPS":
        return drops.MAX_DROPS
    if name.startswith("VNET_GSO_"):
        name = name.removeprefix("VNET_")   # types.GSO_TCPV4 for DP_VNET_GSO_TCPV4
    return getattr(types, name)


CONSTANTS = sorted(n for n in dir(C.lib) if n.startswith("DP_") and n != "DP_DROP_COUNT")


@pytest.mark.parametrize("c_name", CONSTANTS)
def test_every_c_constant_has_its_python_twin(c_name):
    assert python_twin(c_name) == getattr(C.lib, c_name)


def test_the_io_flags_are_checked_too():
    # nothing else checked DP_IO_* before: they must be among the constants compared above
    assert {"DP_IO_VNET", "DP_IO_UDP_GSO", "DP_IO_UDP_GRO", "DP_IO_TUN_USO"} <= set(CONSTANTS)


def test_the_committed_stub_matches_the_compiled_module():
    from dataplane.fastpath import _dpc
    assert _stub.STUB.read_text() == _stub.render(_dpc.ffi, _dpc.lib), (
        "csrc/dp_api.h changed: run `python -m dataplane.fastpath._stub` and commit _dpc.pyi")


def test_the_package_data_glob_matches_the_stub():
    import tomllib
    root = _stub.STUB.parents[2]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["dataplane.fastpath"]
    assert any(_stub.STUB.match(g) for g in globs)

"""Kubernetes manifests as YAML text, from plain Python data (dicts, lists, str, int, bool, None).

Why not PyYAML: a manifest needs block mappings, block sequences and literal blocks, which are a
few dozen lines; a dependency of the package for one command is not worth it. Strings that YAML
could read as something else (numbers, booleans, null, anything with ": " or a leading
indicator) are written as JSON strings, which YAML reads back unchanged; multi-line strings
(the ConfigMap's JSON files) as `|` literal blocks, as kube-flannel.yml has them. The test suite
reads every manifest back with PyYAML and compares it with the data.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["dump", "dump_all"]

_PLAIN = re.compile(r"[A-Za-z_/.][A-Za-z0-9_./@+=-]*(?::[A-Za-z0-9_./@+=-]+)*\Z")
# YAML 1.1 and 1.2 words that would not read back as strings
_SPECIAL = re.compile(r"(?i)(y|n|yes|no|true|false|on|off|null|~|\.nan|[-+]?\.inf)\Z")
INDENT = "  "


def dump_all(documents: list[Any]) -> str:
    """Several documents, each starting with "---", as kubectl apply -f takes them."""
    return "".join("---\n" + dump(doc) for doc in documents)


def dump(value: Any) -> str:
    return "\n".join(_node(value, 0)) + "\n"


def _node(value: Any, level: int) -> list[str]:
    pad = INDENT * level
    if isinstance(value, dict) and value:
        lines = []
        for key, item in value.items():
            lines += _entry(pad + _scalar(str(key)) + ":", item, level, in_list=False)
        return lines
    if isinstance(value, list) and value:
        lines = []
        for item in value:
            lines += _item(pad, item, level)
        return lines
    return [pad + _inline(value, level + 1)]


def _entry(head: str, item: Any, level: int, in_list: bool) -> list[str]:
    if isinstance(item, dict) and item:
        return [head] + _node(item, level + 1)
    if isinstance(item, list) and item:
        return [head] + _node(item, level)          # "key:\n- a": kubectl's own style
    return [f"{head} {_inline(item, level + 1)}"]


def _item(pad: str, item: Any, level: int) -> list[str]:
    if isinstance(item, dict) and item:
        lines = _node(item, level + 1)
        first = lines[0][len(pad) + len(INDENT):]
        return [f"{pad}- {first}"] + lines[1:]
    if isinstance(item, list) and item:
        lines = _node(item, level + 1)
        return [f"{pad}- {lines[0].lstrip()}"] + lines[1:]
    return [f"{pad}- {_inline(item, level + 1)}"]


def _inline(value: Any, level: int) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return json.dumps(value)
    if isinstance(value, str):
        if "\n" in value.rstrip("\n") and _literal_ok(value):
            return _literal(value, level)
        return _scalar(value)
    raise TypeError(f"cannot write {type(value).__name__} as YAML")


def _scalar(text: str) -> str:
    if _PLAIN.match(text) and not _SPECIAL.match(text) and not _numeric(text):
        return text
    return _YAML_UNPRINTABLE.sub(_escape, json.dumps(text, ensure_ascii=False))


# what YAML does not allow unescaped in a document (its c-printable, restated), and the
# characters YAML 1.1 reads as line breaks (NEL, LS, PS) or a byte order mark
_YAML_UNPRINTABLE = re.compile("[^\t\n\r\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe"
                               "\uff00-\ufffd\U00010000-\U0010ffff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _numeric(text: str) -> bool:
    try:
        float(text.replace("_", ""))
        return True
    except ValueError:
        return bool(re.match(r"0[xob]|[-+]?\d", text))


def _literal_ok(text: str) -> bool:
    """A literal block keeps the text exactly when its lines have no trailing blanks, it does
    not start with a blank, and it ends in at most one newline."""
    lines = text.split("\n")
    return (not text.startswith((" ", "\t")) and not text.endswith("\n\n")
            and all(line == line.rstrip() and "\t" not in line for line in lines)
            and not _YAML_UNPRINTABLE.search(text.replace("\n", ""))
            and all(ch.isprintable() for line in lines for ch in line))


def _literal(text: str, level: int) -> str:
    indicator = "|" if text.endswith("\n") else "|-"
    pad = INDENT * level
    body = text[:-1] if text.endswith("\n") else text
    return indicator + "".join("\n" + (pad + line if line else "") for line in body.split("\n"))

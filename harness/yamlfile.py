"""Strict YAML for every file the harness reads: catalogue, scenarios, policies.

Plain YAML loading keeps the last of two equal keys without a word, so a
repeated `series:` or `policies:` would silently change what runs. Here each
repeated key is found with its line numbers before the document is built.
Numbers keep how they were written, since YAML reads `6.10` as the float 6.1
and a message that says "quote it" must show the text the user wrote.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.errors import Problems

# libyaml's parser reads the policy corpus ten times faster than the pure-Python
# one; construction stays in Python either way, so the hooks below apply to both.
_BASE: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class SourceFloat(float):
    """A YAML float that remembers how it was written (`6.10`, read as 6.1)."""

    text: str


class StrictLoader(_BASE):  # type: ignore[valid-type, misc]
    """The safe loader for every harness file: floats keep their source text."""


def _float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    number = SourceFloat(loader.construct_yaml_float(node))
    number.text = str(node.value)
    return number


StrictLoader.add_constructor("tag:yaml.org,2002:float", _float)


def is_number(value: object) -> bool:
    """Whether YAML read `value` as a number (true and false are not numbers)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def as_written(value: object) -> str:
    """The text of a scalar as the file has it: `6.10` for the float 6.1."""
    if isinstance(value, SourceFloat):
        return value.text
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def quote_hint(value: object) -> str:
    """`6.10 is a number to YAML (read as 6.1); write it quoted: '6.10'`."""
    text = as_written(value)
    read = f" (read as {value!r})" if text != repr(value) else ""
    return f"{text} is a number to YAML{read}; write it quoted: '{text}'"


@dataclass(frozen=True)
class Duplicate:
    """A key given twice in one mapping, and where."""

    key: str
    line: int
    first_line: int

    @property
    def message(self) -> str:
        """What is wrong and the fix."""
        return (
            f"duplicate key on line {self.line} (first on line {self.first_line}): "
            "YAML would keep only the last; remove or rename one"
        )


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _duplicates(
    node: yaml.Node, path: str = "", seen: set[int] | None = None
) -> Iterator[Duplicate]:
    # An alias makes the node graph share (even contain) itself: walk each once.
    seen = set() if seen is None else seen
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _duplicates(item, f"{path}[{index}]", seen)
    elif isinstance(node, yaml.MappingNode):
        first: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            name = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else ""
            if name and key_node.tag != "tag:yaml.org,2002:merge":
                # The same key: the same resolved type and the same text.
                ident, line = (key_node.tag, name), key_node.start_mark.line + 1
                if ident in first:
                    yield Duplicate(_child(path, name), line, first[ident])
                first.setdefault(ident, line)
            yield from _duplicates(value_node, _child(path, name), seen)


@dataclass(frozen=True)
class Document:
    """One YAML document: its data and the keys it repeats."""

    data: Any
    duplicates: tuple[Duplicate, ...] = ()


def documents(text: str) -> list[Document]:
    """Every document of `text`; raises yaml.YAMLError when it is not YAML."""
    loader = StrictLoader(text)
    try:
        found = []
        while loader.check_node():
            node = loader.get_node()
            found.append(
                Document(loader.construct_document(node), tuple(_duplicates(node)))
            )
        return found
    finally:
        loader.dispose()


def read(path: Path, problems: Problems, contents: str) -> Any:
    """A one-document YAML file's data, or None; problems go to `problems`.

    `contents` says what the file should hold, for the message when it is
    empty. Repeated keys are recorded and the data still returned (with the
    last value), so that the rest of the file is checked in the same run.
    """
    try:
        found = documents(path.read_text())
    except FileNotFoundError:
        problems.add("", "file not found")
        return None
    except (OSError, UnicodeDecodeError) as e:
        problems.add("", f"cannot read: {e}")
        return None
    except yaml.YAMLError as e:
        problems.add("", f"not valid YAML: {e}")
        return None
    if len(found) > 1:
        problems.add("", f"{len(found)} YAML documents (---); keep one")
    if not found or found[0].data is None:
        problems.add("", f"the file is empty: write {contents} in it")
        return None
    for duplicate in found[0].duplicates:
        problems.add(duplicate.key, duplicate.message)
    return found[0].data

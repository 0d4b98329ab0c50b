"""YAML reading that remembers where every key came from (file and line)."""

from __future__ import annotations

from typing import Any

import yaml

from dcim.site.errors import ConfigIssue, Loc


class LineMap:
    """Maps field paths to 1-based line numbers of one YAML document."""

    def __init__(self, file: str):
        self.file = file
        self._lines: dict[Loc, int] = {}

    def add(self, loc: Loc, line: int) -> None:
        """Record where loc starts."""
        self._lines.setdefault(loc, line)

    def line_of(self, loc: Loc) -> int | None:
        """Line of loc, or of its nearest ancestor present in the file; skips union tags."""
        best: int | None = self._lines.get(())
        path: Loc = ()
        for part in loc:
            candidate = path + (part,)
            if candidate in self._lines:
                path = candidate
                best = self._lines[candidate]
            # parts not in the file (pydantic union tags such as 'modbus_tcp') are skipped
        return best

    def issue(self, loc: Loc, message: str) -> ConfigIssue:
        """A ConfigIssue located at loc."""
        return ConfigIssue(self.file, self.line_of(loc), loc, message)


def _walk(node: yaml.Node, loc: Loc, lines: LineMap, issues: list[ConfigIssue]) -> None:
    lines.add(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                issues.append(ConfigIssue(
                    lines.file, key_node.start_mark.line + 1, loc + (key,),
                    f"duplicate key {key!r} (first at line {seen[key]}); YAML would keep only the last",
                ))
                continue
            seen[key] = key_node.start_mark.line + 1
            lines.add(loc + (key,), key_node.start_mark.line + 1)
            _walk(value_node, loc + (key,), lines, issues)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, loc + (index,), lines, issues)


def read_yaml(text: str, file: str) -> tuple[Any, LineMap, list[ConfigIssue]]:
    """Parse one YAML document; returns data, its line map and structural issues."""
    lines = LineMap(file)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        return None, lines, [ConfigIssue(file, line, (), f"not valid YAML: {problem}")]
    if node is None:
        return None, lines, [ConfigIssue(file, 1, (), "the file is empty, expected a site mapping")]
    issues: list[ConfigIssue] = []
    _walk(node, (), lines, issues)
    data = yaml.safe_load(text)
    return data, lines, issues

"""Read a runbook file into a :class:`~reprieve.runbooks.model.Runbook`, or say what is wrong.

A runbook is read under pressure, so a bad one must be fixed before it runs
rather than halfway through a failover. Every problem becomes one line,
``FILE:LINE: where: what`` (a :class:`UsageError`, exit 2), naming the first
problem and how many more there are: YAML syntax, a key given twice (which
YAML would silently collapse), shape (unknown and missing keys, wrong types,
bad durations; an unknown key is reported first, as it is usually a typo),
and meaning (step names given twice, vaults not in ``vaults``, unknown tiers).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Union

import yaml
from pydantic import BaseModel, ValidationError

from reprieve.errors import UsageError
from reprieve.policy.loader import read_document, shape_problem, where
from reprieve.policy.model import SEED_TIERS, VaultSpec
from reprieve.runbooks.model import (
    FilesRestoreSpec,
    GroupSpec,
    PostgresRestoreSpec,
    Runbook,
    StepSpec,
)

Loc = tuple[str | int, ...]

_TAGS: dict[str, type[BaseModel]] = {
    "<step>": StepSpec,
    "<group>": GroupSpec,
    "<files>": FilesRestoreSpec,
    "<postgres>": PostgresRestoreSpec,
    "<location>": VaultSpec,
}
_PLAIN_TAGS = {"<name>"}


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The model whose keys are at ``loc`` (which still holds the union tags)."""
    current: Any = Runbook
    for part in loc:
        if isinstance(part, str) and part in _TAGS:
            current = _TAGS[part]
            continue
        if part in _PLAIN_TAGS:
            return None
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif typing.get_origin(current) in (list, dict):
            current = typing.get_args(current)[-1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _is_tag(part: str) -> bool:
    return part in _TAGS or part in _PLAIN_TAGS or "[" in part


def _shape_problem(error: Any) -> tuple[Loc, str]:
    raw: Loc = tuple(error["loc"])
    loc: Loc = tuple(p for p in raw if not (isinstance(p, str) and _is_tag(p)))
    return shape_problem(error, loc, lambda: _model_at(raw[:-1]))


def _meaning(runbook: Runbook) -> Iterator[tuple[Loc, str]]:
    """Names given twice, vaults that are not there, tiers that do not exist."""
    if runbook.tier is not None and runbook.tier not in SEED_TIERS:
        yield (
            ("tier",),
            (
                f"no tier named {runbook.tier!r} (known: {', '.join(SEED_TIERS)}); "
                "give rto: and rpo: instead"
            ),
        )
    seen: set[str] = set()
    located: list[tuple[Loc, str, StepSpec | None]] = []
    for i, item in enumerate(runbook.steps):
        if isinstance(item, GroupSpec):
            located.append((("steps", i, "group"), item.group, None))
            located += [
                (("steps", i, "steps", j), step.name, step) for j, step in enumerate(item.steps)
            ]
        else:
            located.append((("steps", i), item.name, item))
    for loc, name, step in located:
        if name in seen:
            yield loc, f"another step is already called {name!r}; names must be unique"
        seen.add(name)
        if step is not None and step.restore is not None:
            vault = step.restore.vault
            if isinstance(vault, str) and vault not in runbook.vaults:
                known = ", ".join(runbook.vaults) or "none"
                yield (*loc, "restore", "vault"), f"no vault named {vault!r} (known: {known})"


def _line(root: yaml.Node | None, loc: Loc) -> int:
    """The line of the deepest node on the way to ``loc``: a key's, or a list item's."""
    node, line = root, 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            pairs = [(k, v) for k, v in node.value if k.value == str(part)]
            if not pairs:
                break
            line = pairs[0][0].start_mark.line + 1
            node = pairs[0][1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _duplicate(node: yaml.Node | None, loc: Loc = ()) -> tuple[Loc, int] | None:
    """The first key given twice in one mapping (YAML would keep only the last)."""
    if isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for key, value in node.value:
            here = (*loc, str(key.value))
            if key.value in keys:
                return here, key.start_mark.line + 1
            keys.add(key.value)
            found = _duplicate(value, here)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            found = _duplicate(value, (*loc, i))
            if found:
                return found
    return None


def _one_line(source: str, root: yaml.Node | None, problems: list[tuple[Loc, str]]) -> UsageError:
    loc, message = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return UsageError(f"{source}:{_line(root, loc)}: {where(loc)}: {message}{more}")


def parse_runbook(text: str, source: str = "runbook.yaml") -> Runbook:
    """The runbook in ``text``; a :class:`UsageError` of one line names its first problem."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"{source}:{line}: YAML syntax error: {problem}") from exc
    twice = _duplicate(root)
    if twice is not None:
        raise UsageError(f"{source}:{twice[1]}: {where(twice[0])}: key given twice")
    if not isinstance(data, dict):
        raise UsageError(f"{source}:1: a runbook is a mapping with at least name and steps")
    try:
        runbook = Runbook.model_validate(data)
    except ValidationError as exc:
        # An unknown key is usually a typo, and the likelier cause of a missing one.
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        raise _one_line(source, root, [_shape_problem(e) for e in errors]) from exc
    problems = list(_meaning(runbook))
    if problems:
        raise _one_line(source, root, problems)
    return runbook


def load_runbook(path: Path) -> Runbook:
    return parse_runbook(read_document(path, "runbook"), str(path))

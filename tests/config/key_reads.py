"""Which config keys rlcamp's code reads, found by reading the code (the ``ast`` of ``rlcamp/``).

A key ``a.b.c`` counts as read where the code has an attribute chain that ends in ``.b.c`` (or
``.c`` reached through a variable or ``self.x`` assigned from such a chain, in the same function or
class), or passes the whole dotted key as a string (``get_key(cfg, "a.b.c")``). The chain is
compared from its end for as long as its names are schema names: ``self.cfg.trainer.logger`` must
match ``trainer.logger``; ``model_cfg.override_config`` (a parameter whose section is not known)
matches every ``*.override_config``. The schema file itself, where keys are declared, is not read.
"""

from __future__ import annotations

import ast
from pathlib import Path

from rlcamp.config.loader import FIELDS, SECTIONS

SCHEMA_NAMES = {part for key in list(FIELDS) + list(SECTIONS) for part in key.split(".")}


def _chain(node: ast.AST, aliases: dict[str, list[str]]) -> list[str] | None:
    """``a.b.c`` -> ['a', 'b', 'c'], with a leading alias (``x`` or ``self.x``) replaced by its chain."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        if isinstance(node.value, ast.Name) and node.value.id == "self" and f"self.{node.attr}" in aliases:
            return aliases[f"self.{node.attr}"] + parts[::-1][1:]
        node = node.value
    if isinstance(node, ast.Name):
        return aliases.get(node.id, [node.id]) + parts[::-1]
    return None


def _target_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return f"self.{node.attr}"
    return None


def _aliases(scope: ast.AST, inherited: dict[str, list[str]]) -> dict[str, list[str]]:
    aliases = dict(inherited)
    for node in ast.walk(scope):
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            pairs = [(target, node.value)]
            if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                pairs = list(zip(target.elts, node.value.elts))
            for t, v in pairs:
                name, chain = _target_name(t), _chain(v, aliases)
                if name and chain and len(chain) > 1:
                    aliases[name] = chain
    return aliases


def read_chains(root: Path, exclude: tuple[str, ...] = ()) -> tuple[list[list[str]], set[str]]:
    """Every attribute chain in the code (aliases resolved) and every string constant."""
    chains, strings = [], set()
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        if relative == "config/schema.py" or relative in exclude:
            continue
        tree = ast.parse(path.read_text())
        class_aliases = {}
        for cls in [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]:
            class_aliases.update({k: v for k, v in _aliases(cls, {}).items() if k.startswith("self.")})
        scopes = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))] + [tree]
        for scope in scopes:
            aliases = _aliases(scope, class_aliases)
            for node in ast.walk(scope):
                if isinstance(node, ast.Attribute):
                    chain = _chain(node, aliases)
                    if chain:
                        chains.append(chain)
        strings |= {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    return chains, strings


def matches(key: str, chain: list[str]) -> bool:
    parts = key.split(".")
    if chain[-1] != parts[-1]:
        return False
    for mine, theirs in zip(reversed(chain[:-1]), reversed(parts[:-1])):
        if mine not in SCHEMA_NAMES:
            return True  # the rest of the chain is a variable whose section is not known
        if mine != theirs:
            return False
    return True


def keys_read(root: Path, exclude: tuple[str, ...] = ()) -> set[str]:
    """Keys the code under ``root`` reads; files named in ``exclude`` (e.g. the refusal lists) do not count."""
    chains, strings = read_chains(root, exclude)
    read = {k for k in FIELDS if k in strings}
    by_leaf: dict[str, list[list[str]]] = {}
    for chain in chains:
        by_leaf.setdefault(chain[-1], []).append(chain)
    read |= {k for k in FIELDS if any(matches(k, c) for c in by_leaf.get(k.rsplit(".", 1)[-1], []))}
    # a key others follow is read through them (clip_ratio -> clip_ratio_low / clip_ratio_high)
    read |= {info.follows for k, info in FIELDS.items() if info.follows and k in read}
    return read

"""Read a HyperPyYAML file (the format of CosyVoice's ``cosyvoice3.yaml``) as plain data.

HyperPyYAML normally *executes* the file: ``!new:pkg.Class`` imports and instantiates a class,
``!apply:random.seed [1986]`` calls a function. We never do that. Every tagged node becomes a
:class:`Tagged` record (kind, dotted target name, arguments) and ``!ref`` expressions are resolved
arithmetically, so the hyperparameters can be read from a released file without importing anything.

Supported tags: ``!new:``, ``!name:``, ``!apply:``, ``!module:`` (multi-constructors), ``!ref``,
``!copy``, ``!tuple``, ``!include`` (recorded, not followed). ``!ref`` accepts ``<key>``,
``<a.b>``, ``<a[b]>`` and arithmetic between references and numbers (``<a> * <b>``).
"""

from __future__ import annotations

import ast
import operator
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ParityUserError


class HyperYamlError(ParityUserError, ValueError):
    pass


@dataclass
class Tagged:
    """A ``!new:``/``!name:``/``!apply:`` node: the class or function is named, never imported."""

    kind: str  # "new", "name", "apply", "module"
    target: str  # dotted path, e.g. "cosyvoice.flow.DiT.dit.DiT"
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)

    @property
    def class_name(self) -> str:
        return self.target.rsplit(".", 1)[-1]


@dataclass
class _Ref:
    expr: str
    copy: bool = False


class _Loader(yaml.SafeLoader):
    pass


def _construct_tagged(loader: _Loader, tag_suffix: str, node: yaml.Node, kind: str) -> Tagged:
    if isinstance(node, yaml.MappingNode):
        kwargs = loader.construct_mapping(node, deep=True)
        return Tagged(kind, tag_suffix, [], dict(kwargs))
    if isinstance(node, yaml.SequenceNode):
        return Tagged(kind, tag_suffix, list(loader.construct_sequence(node, deep=True)), {})
    value = loader.construct_scalar(node)
    return Tagged(kind, tag_suffix, [] if value in ("", None) else [value], {})


for _kind in ("new", "name", "apply", "module"):
    _Loader.add_multi_constructor(
        f"!{_kind}:", lambda loader, suffix, node, _k=_kind: _construct_tagged(loader, suffix, node, _k)
    )
_Loader.add_constructor("!ref", lambda loader, node: _Ref(loader.construct_scalar(node)))
_Loader.add_constructor("!copy", lambda loader, node: _Ref(loader.construct_scalar(node), copy=True))
_Loader.add_constructor("!tuple", lambda loader, node: tuple(loader.construct_sequence(node, deep=True)))
_Loader.add_constructor(
    "!include", lambda loader, node: Tagged("include", str(loader.construct_scalar(node)))
)

# YAML 1.1 (PyYAML) reads "1e-06" as a string; HyperPyYAML (ruamel) reads it as a float.
_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)$")
_REF_RE = re.compile(r"<([^<>]+)>")
_BINOPS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}


def _lookup(root: dict, key: str, source: str) -> Any:
    parts = [p for p in re.split(r"[.\[\]]", key.strip()) if p]
    node: Any = root
    for part in parts:
        if isinstance(node, Tagged):
            node = node.kwargs
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise HyperYamlError(f"{source}: !ref <{key}> does not name an entry of the file")
    return node


def _eval_arith(expr: str, source: str) -> Any:
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as exc:
        raise HyperYamlError(f"{source}: cannot parse !ref expression {expr!r}") from exc

    def ev(n: ast.AST) -> Any:
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.Constant) and isinstance(n.value, (int, float, str)):
            return n.value
        if isinstance(n, ast.BinOp) and type(n.op) in _BINOPS:
            return _BINOPS[type(n.op)](ev(n.left), ev(n.right))
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, (ast.USub, ast.UAdd)):
            v = ev(n.operand)
            return -v if isinstance(n.op, ast.USub) else v
        raise HyperYamlError(f"{source}: !ref expression {expr!r} uses something other than arithmetic")

    return ev(tree)


def _resolve(node: Any, root: dict, source: str, depth: int = 0) -> Any:
    if depth > 64:
        raise HyperYamlError(f"{source}: !ref chain too deep (circular reference?)")
    if isinstance(node, _Ref):
        expr = node.expr.strip()
        whole = _REF_RE.fullmatch(expr)
        if whole:
            return _resolve(_lookup(root, whole.group(1), source), root, source, depth + 1)
        values = []

        def sub(m: re.Match) -> str:
            values.append(_resolve(_lookup(root, m.group(1), source), root, source, depth + 1))
            return f"__v{len(values) - 1}"

        code = _REF_RE.sub(sub, expr)
        for i, v in enumerate(values):
            code = code.replace(f"__v{i}", repr(v))
        return _eval_arith(code, source)
    if isinstance(node, Tagged):
        return Tagged(node.kind, node.target, [_resolve(a, root, source, depth + 1) for a in node.args],
                      {k: _resolve(v, root, source, depth + 1) for k, v in node.kwargs.items()})
    if isinstance(node, dict):
        return {k: _resolve(v, root, source, depth + 1) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, root, source, depth + 1) for v in node]
    if isinstance(node, tuple):
        return tuple(_resolve(v, root, source, depth + 1) for v in node)
    if isinstance(node, str) and _FLOAT_RE.match(node):
        return float(node)
    return node


def load_hyperyaml(path_or_text: str | Path, *, source: str | None = None) -> dict:
    """Parse a HyperPyYAML document into plain Python data (dicts, lists, :class:`Tagged`)."""
    if isinstance(path_or_text, Path) or (isinstance(path_or_text, str) and "\n" not in path_or_text
                                          and Path(path_or_text).exists()):
        path = Path(path_or_text)
        text = path.read_text(encoding="utf-8")
        source = source or str(path)
    else:
        text = str(path_or_text)
        source = source or "<yaml text>"
    try:
        raw = yaml.load(text, Loader=_Loader)  # noqa: S506 - custom SafeLoader subclass, no object construction
    except yaml.YAMLError as exc:
        raise HyperYamlError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise HyperYamlError(f"{source}: expected a mapping at the top level")
    return _resolve(raw, raw, source)

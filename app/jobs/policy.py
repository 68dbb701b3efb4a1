"""An optional static pre-check of Python code (CODE_POLICY_ENABLED, off by default).

This is a teaching aid that gives early, friendly feedback ("`socket` is not allowed here, line 3").
It is NOT a security boundary: static checks of Python are easy to evade (getattr, importlib,
encoded strings...). The sandbox's isolation is what keeps hostile code contained.
"""

from __future__ import annotations

import ast

from app.core.config import Settings
from app.core.errors import CodePolicyViolationError

_NESTING_NODES = (
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.If,
    ast.For,
    ast.AsyncFor,
    ast.While,
    ast.With,
    ast.AsyncWith,
    ast.Try,
    ast.Lambda,
    ast.ListComp,
    ast.SetComp,
    ast.DictComp,
    ast.GeneratorExp,
    ast.Match,
)


def _violation(rule: str, message: str, line: int | None) -> CodePolicyViolationError:
    return CodePolicyViolationError(
        f"{message} (line {line})" if line else message,
        details={"rule": rule, "line": line},
    )


class _Checker(ast.NodeVisitor):
    def __init__(self, settings: Settings) -> None:
        self.imports = set(settings.code_policy_forbidden_imports)
        self.calls = set(settings.code_policy_forbidden_calls)
        self.max_depth = settings.code_policy_max_depth
        self.depth = 0

    def generic_visit(self, node: ast.AST) -> None:
        nests = isinstance(node, _NESTING_NODES)
        if nests:
            self.depth += 1
            if self.depth > self.max_depth:
                raise _violation(
                    "max_depth",
                    f"the code nests deeper than {self.max_depth} levels",
                    getattr(node, "lineno", None),
                )
        super().generic_visit(node)
        if nests:
            self.depth -= 1

    def _check_module(self, name: str | None, node: ast.stmt) -> None:
        root = (name or "").split(".")[0]
        if root in self.imports:
            raise _violation("forbidden_import", f"importing {root!r} is not allowed", node.lineno)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._check_module(alias.name, node)
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self._check_module(node.module, node)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if name in self.calls:
            raise _violation("forbidden_call", f"calling {name}() is not allowed", node.lineno)
        self.generic_visit(node)


def check_code(settings: Settings, *, code: str, language: str) -> None:
    """Refuse Python code that breaks the configured policy; a no-op when the policy is off.

    Raises:
        CodePolicyViolationError: with details {"rule", "line"}.
    """
    if not settings.code_policy_enabled or language != "python":
        return
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return  # not the policy's business: the run reports the SyntaxError itself
    except (RecursionError, MemoryError, ValueError):
        raise _violation("max_depth", "the code is too deeply nested to analyse", None) from None
    try:
        _Checker(settings).visit(tree)
    except RecursionError:
        raise _violation("max_depth", "the code is too deeply nested to analyse", None) from None

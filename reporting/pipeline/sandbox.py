"""The template sandbox: everything staff can type or choose is rendered here, and only here.

Paths, query parameters, subjects and the report layouts see plain data only (dicts, lists,
strings, numbers, dates): a variable is looked up by key or index, never by attribute or
method call, so nothing reachable from the context can reach a model, a user, a setting or
the environment, or change the data it was given. The tags and filters are a fixed set
(reporting.pipeline.sandbox_tags); `{% include %}` and `{% extends %}` reach only the shipped
layouts under reporting/email/ and reports/ (the app's own, in reporting/templates/, and any
the project adds in its template folders). Each render has an output
size and a time limit, and says in words which one it went over.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as time_of_day
from typing import Any

from django.conf import settings
from django.template import Context, Engine, Origin, Template, TemplateDoesNotExist
from django.template.base import (
    FilterExpression,
    Lexer,
    Node,
    Parser,
    TextNode,
    Variable,
    VariableDoesNotExist,
    VariableNode,
)
from django.template.context import BaseContext
from django.template.defaulttags import (
    CycleNode,
    FirstOfNode,
    GroupedResult,
    LoremNode,
    TemplateTagNode,
    VerbatimNode,
    WidthRatioNode,
)
from django.template.exceptions import TemplateSyntaxError
from django.template.loader_tags import BlockNode
from django.template.loaders import cached, filesystem
from django.template.loaders.base import Loader

from reporting import conf
from reporting.pipeline import rowstore

# Layouts a template may include or extend: the shipped email layouts and report bodies.
LAYOUT_FOLDERS = ("reporting/email/", "reports/")
MB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_chars: int
    seconds: float


# A subject, path or query parameter is one line: it has no business taking long.
ONE_LINE = Limits(max_chars=5 * MB, seconds=2)
# An email part lays out at most the report's "rows in the email"; the CSV carries the rest.
EMAIL_PART = Limits(max_chars=5 * MB, seconds=20)


class TemplateLimitError(Exception):
    """A template went over one of the sandbox's limits; `message` says which, in words."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass
class RenderBudget:
    """What one render may still spend: its deadline, and the characters it has written so far."""

    what: str
    limits: Limits
    deadline: float
    chars: int = field(default=0)

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateLimitError(
                f"The {self.what} took longer than {self.limits.seconds:g} s to render, the most a "
                "report template may take; simplify it or show fewer rows."
            )

    def charge(self, chars: int) -> None:
        self.chars += chars
        if self.chars > self.limits.max_chars:
            self.too_large()

    def too_large(self) -> None:
        raise TemplateLimitError(
            f"The {self.what}'s output is larger than {self.limits.max_chars / MB:g} MB, the most a "
            "report template may produce; show fewer rows or shorten it."
        )


_budget: ContextVar[RenderBudget | None] = ContextVar("sandbox_budget", default=None)


def current_budget() -> RenderBudget | None:
    """The budget of the render in progress (None outside one)."""
    return _budget.get()


def check_length(chars: int) -> None:
    """Fail in words when one value of `chars` characters would be larger than a whole render may be."""
    budget = _budget.get()
    if budget is not None and chars > budget.limits.max_chars:
        budget.too_large()


def check_size(value: Any) -> Any:
    """`value` as it is, or TemplateLimitError when it is larger than a whole render may be."""
    check_length(len(value) if isinstance(value, str | list | tuple) else 0)
    return value


# --- rendering --------------------------------------------------------------------------------


def render_string(source: str, context: Mapping[str, Any], *, what: str, limits: Limits = ONE_LINE) -> str:
    """Render a template typed by staff (a subject, a path, a query parameter), without HTML escaping."""
    template = _engine(autoescape=False).from_string(source)
    return _render(template, context, what=what, limits=limits)


def find_layout(names: list[str], *, html: bool) -> SandboxTemplate:
    """The first of the shipped layouts `names` that exists, compiled; `html` escapes every value."""
    return _engine(autoescape=html).select_template(names)  # type: ignore[return-value]


def render_layout(
    template: SandboxTemplate, context: Mapping[str, Any], *, what: str, limits: Limits = EMAIL_PART
) -> str:
    """Render a layout found by find_layout."""
    return _render(template, context, what=what, limits=limits)


def _render(template: Template, context: Mapping[str, Any], *, what: str, limits: Limits) -> str:
    token = _budget.set(RenderBudget(what, limits, deadline=time.monotonic() + limits.seconds))
    try:
        rendered = template.render(Context(dict(context), autoescape=template.engine.autoescape))
    finally:
        _budget.reset(token)
    # A plain str, not Django's "safe" string: whatever shows it must escape it (the Preview does).
    return "".join((rendered, ""))


# --- the engine -------------------------------------------------------------------------------


class SandboxTemplate(Template):
    """A template compiled by the sandbox's parser: plain-data lookups, every node on a budget."""

    def compile_nodelist(self):
        parser = _SandboxParser(
            Lexer(self.source).tokenize(), self.engine.template_libraries, self.engine.template_builtins, self.origin
        )
        nodelist = parser.parse()
        self.extra_data = parser.extra_data
        return nodelist


class _SandboxEngine(Engine):
    # Instead of Django's defaulttags, defaultfilters and loader_tags: our fixed set of them.
    default_builtins = ["reporting.pipeline.sandbox_tags"]

    def from_string(self, template_code: str) -> SandboxTemplate:
        return SandboxTemplate(template_code, engine=self)


@functools.lru_cache(maxsize=16)
def _engine_for(dirs: tuple[str, ...], autoescape: bool, cache: bool) -> _SandboxEngine:
    layouts = f"{__name__}._LayoutLoader"
    loaders = [(f"{__name__}._CachedLayoutLoader", [layouts])] if cache else [layouts]
    return _SandboxEngine(
        dirs=list(dirs),
        loaders=loaders,
        libraries={},
        autoescape=autoescape,
        string_if_invalid=conf.setting("MISSING_VARIABLE_MARK"),
    )


def _engine(*, autoescape: bool) -> _SandboxEngine:
    # The project's template folders, then the apps' (this app's layouts among them): reporting.conf.
    dirs = tuple(str(folder) for folder in conf.template_dirs())
    # Cached compiled layouts, except while developing, when an edited layout must show at once.
    return _engine_for(dirs, autoescape, not settings.DEBUG)


class _LayoutLoader(filesystem.Loader):
    """The shipped layouts only: names under LAYOUT_FOLDERS, inside the template folders."""

    def get_template_sources(self, template_name: str) -> Iterator[Origin]:
        if not template_name.startswith(LAYOUT_FOLDERS) or ".." in template_name.split("/"):
            return
        yield from super().get_template_sources(template_name)

    def get_template(self, template_name: str, skip: list[Origin] | None = None) -> SandboxTemplate:
        return _sandboxed_template(self, template_name, skip)


class _CachedLayoutLoader(cached.Loader):
    def get_template(self, template_name: str, skip: list[Origin] | None = None) -> SandboxTemplate:
        key = self.cache_key(template_name, skip)
        if key not in self.get_template_cache:
            try:
                self.get_template_cache[key] = _sandboxed_template(self, template_name, skip)
            except TemplateDoesNotExist as missing:
                self.get_template_cache[key] = missing
        cached_value = self.get_template_cache[key]
        if isinstance(cached_value, TemplateDoesNotExist):
            raise TemplateDoesNotExist(template_name, tried=cached_value.tried)
        return cached_value


def _sandboxed_template(loader: Loader, template_name: str, skip: list[Origin] | None) -> SandboxTemplate:
    """Django's Loader.get_template, compiling with the sandbox's parser."""
    tried = []
    for origin in loader.get_template_sources(template_name):
        if skip is not None and origin in skip:
            tried.append((origin, "Skipped to avoid recursion"))
            continue
        try:
            contents = loader.get_contents(origin)  # type: ignore[attr-defined]
        except TemplateDoesNotExist:
            tried.append((origin, "Source does not exist"))
            continue
        return SandboxTemplate(contents, origin, origin.template_name, loader.engine)  # type: ignore[arg-type]
    raise TemplateDoesNotExist(template_name, tried=tried)


# --- the parser: plain-data lookups, budgeted nodes, errors in words ------------------------------

# Nodes that write text of their own (the others only arrange the text of their children).
_TEXT_NODES = (TextNode, VariableNode, LoremNode, FirstOfNode, CycleNode, WidthRatioNode, TemplateTagNode, VerbatimNode)


class _SandboxParser(Parser):
    def compile_filter(self, token: str) -> FilterExpression:
        expression = super().compile_filter(token)
        if isinstance(expression.var, Variable):
            expression.var = PlainDataVariable(expression.var.var)
        expression.filters = [
            (function, [(lookup, PlainDataVariable(arg.var) if lookup else arg) for lookup, arg in args])
            for function, args in expression.filters
        ]
        return expression

    def extend_nodelist(self, nodelist, node: Node, token) -> None:
        _budgeted(node)
        super().extend_nodelist(nodelist, node, token)

    def invalid_block_tag(self, token, command: str, parse_until=None):
        if parse_until or command.startswith("end"):
            return super().invalid_block_tag(token, command, parse_until)
        raise self.error(
            token,
            f"Invalid block tag on line {token.lineno}: '{command}' is not a tag report templates may use. "
            + _ALLOWED_TAGS_HINT,
        )

    def find_filter(self, filter_name: str):
        if filter_name in self.filters:
            return self.filters[filter_name]
        raise TemplateSyntaxError(f"Invalid filter: '{filter_name}' is not a filter report templates may use.")


_ALLOWED_TAGS_HINT = (
    "They may use: if, for, with, firstof, cycle, filter, autoescape, comment, spaceless, regroup, "
    "ifchanged, widthratio, templatetag, verbatim, lorem, and block, extends and include of the "
    "layouts under reporting/email/ and reports/."
)


def _budgeted(node: Node) -> None:
    """Make `node` check the render's time on every render, and charge the text it writes."""
    render = node.render_annotated
    writes_text = isinstance(node, _TEXT_NODES)

    # Called for every node of every loop iteration: kept to one budget lookup and one clock read.
    def render_on_budget(context):
        budget = _budget.get()
        if budget is None:
            return render(context)
        budget.tick()
        output = render(context)
        if writes_text:
            budget.charge(len(output))  # type: ignore[arg-type]
        return output

    node.render_annotated = render_on_budget  # type: ignore[method-assign]


_DATE_PARTS = frozenset({"year", "month", "day", "hour", "minute", "second", "microsecond"})
_DICT_VIEWS = {"items": dict.items, "keys": dict.keys, "values": dict.values}


class PlainDataVariable(Variable):
    """A variable looked up by key or index only: no attribute, no method call, no mutation."""

    def _resolve_lookup(self, context):
        current = context
        for bit in self.lookups:  # type: ignore[union-attr]
            current = _step(current, bit)
        return current


def _step(current: Any, bit: str) -> Any:
    try:
        if isinstance(current, BaseContext | Mapping):
            if bit in _DICT_VIEWS and isinstance(current, dict) and bit not in current:
                return list(_DICT_VIEWS[bit](current))
            return current[bit]
        if isinstance(current, GroupedResult) and bit in GroupedResult._fields:
            return getattr(current, bit)  # {% regroup %}'s groups: grouper and list
        if isinstance(current, list | tuple | str | rowstore.RowStream):
            return current[int(bit)]
        if isinstance(current, date | time_of_day | datetime) and bit in _DATE_PARTS:
            return getattr(current, bit)
        if isinstance(current, BlockNode) and bit == "super":
            return current.super()  # {{ block.super }} in a layout that extends another
    except (KeyError, IndexError, ValueError, TypeError):
        pass
    raise VariableDoesNotExist("Failed lookup for key [%s] in %r", (bit, type(current).__name__))

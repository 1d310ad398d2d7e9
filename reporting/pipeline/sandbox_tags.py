"""The fixed set of tags and filters report templates may use (the sandbox's only builtins).

Django's own, less what reaches past the data (`debug`, `load`, `now`, `url`, `csrf_token`,
`querystring`, `pprint`, `timesince`/`timeuntil`) or marks data as HTML (`safe`, `safeseq`),
and with a bound on every argument that could blow up the output (`{% lorem %}`'s count,
widths, precisions, a `join`'s separator).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

from django.template import Library, defaultfilters, defaulttags, loader_tags
from django.template.base import Node, Parser, Token
from django.template.defaulttags import LoremNode
from django.template.exceptions import TemplateSyntaxError

from reporting.pipeline import rowstore
from reporting.pipeline.sandbox import TemplateLimitError, check_length, check_size, current_budget

MAX_LOREM = 1000  # words or paragraphs
MAX_WIDTH = 10_000  # characters of an ljust, rjust, center or stringformat field
MAX_PRECISION = 50  # decimal places of floatformat

register = Library()


def _in_order(compile_tag: Callable[[Parser, Token], Node]) -> Callable[[Parser, Token], Node]:
    """`{% regroup %}`, refused on a large answer's streamed rows: it would hold every row."""

    def compile_in_order(parser: Parser, token: Token) -> Node:
        node = compile_tag(parser, token)
        render = node.render

        def render_in_order(context: Any) -> str:
            if isinstance(node.target.resolve(context, ignore_failures=True), rowstore.RowStream):  # type: ignore[attr-defined]
                raise rowstore.OutOfOrder()
            return render(context)

        node.render = render_in_order  # type: ignore[method-assign]
        return node

    return compile_in_order


_TAGS = {
    "autoescape": defaulttags.autoescape,
    "block": loader_tags.do_block,
    "comment": defaulttags.comment,
    "cycle": defaulttags.cycle,
    "filter": defaulttags.do_filter,
    "firstof": defaulttags.firstof,
    "for": defaulttags.do_for,
    "if": defaulttags.do_if,
    "ifchanged": defaulttags.ifchanged,
    "regroup": _in_order(defaulttags.regroup),
    "resetcycle": defaulttags.resetcycle,
    "spaceless": defaulttags.spaceless,
    "templatetag": defaulttags.templatetag,
    "verbatim": defaulttags.verbatim,
    "widthratio": defaulttags.widthratio,
    "with": defaulttags.do_with,
}
_LEFT_OUT_FILTERS = frozenset({"safe", "safeseq", "pprint", "random", "timesince", "timeuntil"})

for _name, _compile in _TAGS.items():
    register.tag(_name, _compile)


@register.tag
def load(parser: Parser, token: Token):
    raise TemplateSyntaxError(
        f"{{% {token.contents} %}}: report templates cannot load tag libraries; they use a fixed set of tags "
        "and filters."
    )


@register.tag
def extends(parser: Parser, token: Token):
    """Django's, given a full name: the sandbox's loader finds only the shipped layouts."""
    _refuse_relative_name(token)
    return loader_tags.do_extends(parser, token)


@register.tag
def include(parser: Parser, token: Token):
    """Django's, given a full name: the sandbox's loader finds only the shipped layouts."""
    _refuse_relative_name(token)
    return loader_tags.do_include(parser, token)


def _refuse_relative_name(token: Token) -> None:
    bits = token.split_contents()
    if len(bits) > 1 and bits[1].strip("'\"").startswith(("./", "../")):
        raise TemplateSyntaxError(
            f"{{% {bits[0]} %}} takes a layout's full name under reporting/email/ or reports/, not {bits[1]}."
        )


class BoundedLoremNode(LoremNode):
    def render(self, context) -> str:
        try:
            count = int(self.count.resolve(context))
        except (ValueError, TypeError):
            count = 1
        if count > MAX_LOREM:
            raise TemplateLimitError(
                f"{{% lorem %}} may write at most {MAX_LOREM:,} words or paragraphs, not {count:,}."
            )
        return super().render(context)


@register.tag
def lorem(parser: Parser, token: Token) -> BoundedLoremNode:
    node = defaulttags.lorem(parser, token)
    return BoundedLoremNode(node.count, node.method, node.common)


# --- filters: Django's, each on the render's budget ----------------------------------------------


def _as_int(argument: Any) -> int | None:
    try:
        return int(str(argument).rstrip("gu") or 0)
    except ValueError:
        return None  # the filter itself decides what a non-number means


def _check_width(name: str, value: Any, argument: Any = None) -> None:
    width = _as_int(argument)
    if width is not None and width > MAX_WIDTH:
        raise TemplateLimitError(f"The filter '{name}' may pad to at most {MAX_WIDTH:,} characters, not {width:,}.")


def _check_format(name: str, value: Any, argument: Any = None) -> None:
    for number in re.findall(r"\d+", str(argument)):
        if int(number) > MAX_WIDTH:
            raise TemplateLimitError(f"The filter '{name}' may pad to at most {MAX_WIDTH:,} characters, not {number}.")


def _check_precision(name: str, value: Any, argument: Any = -1) -> None:
    places = _as_int(argument)
    if places is not None and abs(places) > MAX_PRECISION:
        raise TemplateLimitError(f"The filter '{name}' may show at most {MAX_PRECISION} decimal places, not {places}.")


def _check_join(name: str, value: Any, argument: Any = "") -> None:
    # The separator alone, once between each two items: checked before the string is built.
    if isinstance(value, list | tuple):
        check_length(max(len(value) - 1, 0) * len(str(argument)))


_ARGUMENT_CHECKS: dict[str, Callable[..., None]] = {
    "ljust": _check_width,
    "rjust": _check_width,
    "center": _check_width,
    "stringformat": _check_format,
    "floatformat": _check_precision,
    "join": _check_join,
}


# Filters that hold every item of what they are given: refused on a large answer's streamed rows.
_HOLDING_FILTERS = frozenset({"dictsort", "dictsortreversed", "make_list", "unordered_list"})


def _bounded(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    check_arguments = _ARGUMENT_CHECKS.get(name)
    holds_all = name in _HOLDING_FILTERS

    @functools.wraps(function)  # keeps is_safe, needs_autoescape, expects_localtime and the signature
    def bounded(value: Any, *args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        if budget is not None:
            budget.tick()
        if holds_all and isinstance(value, rowstore.RowStream):
            raise rowstore.OutOfOrder()
        if check_arguments is not None:
            check_arguments(name, value, *args)
        return check_size(function(value, *args, **kwargs))

    return bounded


for _name, _filter in defaultfilters.register.filters.items():
    if _name not in _LEFT_OUT_FILTERS:
        register.filter(_name, _bounded(_name, _filter))

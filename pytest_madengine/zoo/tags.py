"""madengine's `--tags` selection: by name, by tag, `all`, `scope/x`, and `tag:k=v` extra args."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import MadengineError
from .models import ModelSpec


class TagError(MadengineError, ValueError):
    """A selector that selects nothing, or that cannot be parsed."""


@dataclass(frozen=True)
class Selector:
    text: str
    scope: str  # "" unless `scope/x`
    tag: str
    extra_args: str  # " --k1 v1 --k2 v2"

    def matches(self, spec: ModelSpec) -> bool:
        if self.scope:
            if not spec.name.startswith(f"{self.scope}/"):
                return False
            return self.tag == "all" or self.tag in spec.tags or spec.name == f"{self.scope}/{self.tag}"
        return self.tag == "all" or spec.name == self.tag or self.tag in spec.tags


def parse_selectors(values: Iterable[str]) -> list[Selector]:
    selectors = []
    for value in values:
        for text in value.split(","):
            text = text.strip()
            if not text:
                continue
            # madengine's own rewrite: each `:`-part (blank ones dropped) is a flag, `=` a space.
            head, *parts = [part.strip() for part in text.split(":") if part.strip()] or [""]
            extra = " --" + " --".join(part.replace("=", " ") for part in parts) if parts else ""
            colon = ":" in text
            scope, slash, tag = head.partition("/")
            if slash and not scope:
                raise TagError(f"--madengine-tags {text!r}: a scope goes before the slash (scope/tag)")
            if slash and "/" not in tag and not colon:
                selectors.append(Selector(text, scope, tag, extra))
            else:
                selectors.append(Selector(text, "", head, extra))
    return selectors


def select(specs: Iterable[ModelSpec], selectors: list[Selector]) -> dict[str, list[str]]:
    """Model name -> the extra args of each time it is selected (madengine runs a model once per
    selection that picks it: plain and with `:k=v` args is twice); the same args once. A selector
    matching nothing is an error."""
    specs = list(specs)
    chosen: dict[str, list[str]] = {}
    for selector in selectors:
        matched = [spec for spec in specs if selector.matches(spec)]
        if not matched:
            raise TagError(f"--madengine-tags {selector.text!r} matches no model (by name, tag or 'all')")
        for spec in matched:
            variants = chosen.setdefault(spec.name, [])
            if selector.extra_args not in variants:
                variants.append(selector.extra_args)
    return chosen

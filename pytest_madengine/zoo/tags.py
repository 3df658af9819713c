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
            head, *pairs = text.split(":")
            extra = ""
            for pair in pairs:
                key, sep, val = pair.partition("=")
                if not sep or not key:
                    raise TagError(f"--madengine-tags {text!r}: extra args go as tag:key=value:key2=value2")
                extra += f" --{key} {val}"
            scope, slash, tag = head.partition("/")
            if slash and "/" not in tag and not pairs:
                selectors.append(Selector(text, scope, tag, extra))
            else:
                selectors.append(Selector(text, "", head, extra))
    return selectors


def select(specs: Iterable[ModelSpec], selectors: list[Selector]) -> dict[str, str]:
    """Model name -> extra args for every selected model; a selector matching nothing is an error."""
    specs = list(specs)
    chosen: dict[str, str] = {}
    for selector in selectors:
        matched = [spec for spec in specs if selector.matches(spec)]
        if not matched:
            raise TagError(f"--madengine-tags {selector.text!r} matches no model (by name, tag or 'all')")
        for spec in matched:
            chosen[spec.name] = chosen.get(spec.name, "") + selector.extra_args
    return chosen

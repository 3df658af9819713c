"""`--madengine-tags`, as `madengine run --tags` selects: by name, by tag, `all`, `scope/x`, `tag:k=v` args."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_madengine.zoo.models import ModelSpec
from pytest_madengine.zoo.tags import Selector, TagError, parse_selectors, select


def model(name: str, *tags: str) -> ModelSpec:
    root = Path("/zoo")
    return ModelSpec(
        name=name, source=root / "models.json", lineno=0, root=root, dockerfile="d", scripts="s", tags=tags
    )


ZOO = [
    model("bert", "nlp", "pyt"),
    model("resnet", "vision", "pyt"),
    model("llama", "nlp"),
    model("team/llama", "nlp", "big"),
    model("team/mixtral", "big"),
    model("other/gpt", "nlp"),
]


def chosen(*values: str) -> dict[str, str]:
    """Model -> its extra args, for models selected once."""
    found = select(ZOO, parse_selectors(values))
    assert all(len(variants) == 1 for variants in found.values()), found
    return {name: variants[0] for name, variants in found.items()}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["bert"], {"bert": ""}),  # by name
        (["vision"], {"resnet": ""}),  # by tag
        (["nlp"], {"bert": "", "llama": "", "team/llama": "", "other/gpt": ""}),
        (["all"], {spec.name: "" for spec in ZOO}),
        (["team/all"], {"team/llama": "", "team/mixtral": ""}),  # every model of a scope
        (["team/big"], {"team/llama": "", "team/mixtral": ""}),  # a tag within a scope
        (["team/llama"], {"team/llama": ""}),  # a name within a scope; not the unscoped llama
        (["team/mixtral"], {"team/mixtral": ""}),  # a scoped name whose tags do not say so
        (["bert,resnet"], {"bert": "", "resnet": ""}),  # a comma list
        (["bert", "resnet"], {"bert": "", "resnet": ""}),  # the option repeated
        ([" bert , ,resnet ,"], {"bert": "", "resnet": ""}),  # blanks and spaces ignored
        (["bert", "bert"], {"bert": ""}),  # selected twice: one item
    ],
)
def test_selection(values: list[str], expected: dict[str, str]) -> None:
    assert chosen(*values) == expected


def test_scope_does_not_leak_to_other_scopes_or_unscoped_models() -> None:
    assert set(chosen("other/nlp")) == {"other/gpt"}
    # a scope is the whole first path element: `tea/all` is not `team/all`
    with pytest.raises(TagError):
        chosen("tea/all")


def test_extra_args_are_madengines_rewrite() -> None:
    """madengine: every `:`-part is a flag, each `=` a space, blank parts dropped."""
    assert chosen("bert:batch=8:dtype=fp16") == {"bert": " --batch 8 --dtype fp16"}
    assert chosen("bert:fast") == {"bert": " --fast"}  # a key without a value
    assert chosen("bert:expr=a=b") == {"bert": " --expr a b"}
    assert chosen("bert:") == {"bert": ""}
    assert chosen("bert::fast") == {"bert": " --fast"}


def test_a_model_selected_with_other_args_runs_once_per_selection() -> None:
    """madengine runs a model once per selection that picks it (its list is not de-duplicated)."""
    assert select(ZOO, parse_selectors(["bert", "bert:batch=8", "nlp:seq=128", "bert"])) == {
        "bert": ["", " --batch 8", " --seq 128"],
        "llama": [" --seq 128"],
        "team/llama": [" --seq 128"],
        "other/gpt": [" --seq 128"],
    }


def test_an_empty_scope_is_an_error() -> None:
    with pytest.raises(TagError, match="'/pyt'"):
        chosen("/pyt")


def test_a_scoped_selector_with_extra_args_is_taken_as_a_plain_name() -> None:
    # madengine only splits `scope/x` without args; with args the head is matched as a name or tag
    (selector,) = parse_selectors(["team/llama:batch=2"])
    assert (selector.scope, selector.tag, selector.extra_args) == ("", "team/llama", " --batch 2")
    assert chosen("team/llama:batch=2") == {"team/llama": " --batch 2"}


def test_a_head_with_two_slashes_is_a_plain_name() -> None:
    (selector,) = parse_selectors(["a/b/c"])
    assert (selector.scope, selector.tag) == ("", "a/b/c")


def test_selector_keeps_the_text_it_came_from_for_messages() -> None:
    assert [s.text for s in parse_selectors([" bert , team/all "])] == ["bert", "team/all"]
    (scoped,) = parse_selectors(["team/big"])
    assert (scoped.scope, scoped.tag, scoped.extra_args) == ("team", "big", "")


@pytest.mark.parametrize("unknown", ["nothing", "team/nothing", "nobody/all", "bert:x=1,ghost"])
def test_a_selector_matching_nothing_is_an_error_naming_it(unknown: str) -> None:
    culprit = unknown.split(",")[-1]
    with pytest.raises(TagError, match=f"--madengine-tags '{culprit}' matches no model"):
        chosen(unknown)


def test_no_selectors_select_nothing() -> None:
    assert select(ZOO, []) == {}
    assert parse_selectors(["", " , "]) == []


def test_matches_is_the_rule_for_one_model() -> None:
    scoped = Selector("team/llama", "team", "llama", "")
    assert scoped.matches(model("team/llama"))
    assert not scoped.matches(model("llama", "llama"))  # unscoped model with the tag: outside the scope
    assert not scoped.matches(model("teamx/llama"))
    assert Selector("team/nlp", "team", "nlp", "").matches(model("team/x", "nlp"))
    plain = Selector("nlp", "", "nlp", "")
    assert plain.matches(model("x", "nlp")) and not plain.matches(model("x", "nlpx"))

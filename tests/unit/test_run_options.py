"""A card's `additional_docker_run_options` as docker SDK arguments, and how they meet the defaults."""

from __future__ import annotations

from typing import Any

import pytest
from docker.types import Ulimit

from pytest_madengine.engine.docker_cli import cli_flags
from pytest_madengine.engine.run_options import (
    FLAGS,
    RunOptionsError,
    default_options,
    merge_options,
    parse_run_options,
)

WHERE = "zoo/models.json: model 'm'"
FIELD = f"{WHERE}: field 'additional_docker_run_options'"


def parse(text: str, environ: dict[str, str] | None = None) -> dict[str, Any]:
    return parse_run_options(text, WHERE, environ or {})


# Every flag that takes a value: (its value, the SDK argument, what the SDK gets).
VALUED = {
    "--shm-size": ("2g", "shm_size", "2g"),
    "--ipc": ("private", "ipc_mode", "private"),
    "--network": ("none", "network_mode", "none"),
    "--net": ("none", "network_mode", "none"),
    "--device": ("/dev/null:/dev/n", "devices", ["/dev/null:/dev/n"]),
    "--env": ("A=1=2", "environment", {"A": "1=2"}),
    "-e": ("A=", "environment", {"A": ""}),
    "--volume": ("/h:/c:ro", "volumes", ["/h:/c:ro"]),
    "-v": ("/h:/c", "volumes", ["/h:/c:rw"]),
    "--ulimit": ("nofile=1:2", "ulimits", [Ulimit(name="nofile", soft=1, hard=2)]),
    "--cap-add": ("NET_ADMIN", "cap_add", ["NET_ADMIN"]),
    "--cap-drop": ("MKNOD", "cap_drop", ["MKNOD"]),
    "--security-opt": ("label=disable", "security_opt", ["label=disable"]),
    "--group-add": ("render", "group_add", ["render"]),
    "--user": ("1000:1000", "user", "1000:1000"),
    "-u": ("root", "user", "root"),
    "--memory": ("4g", "mem_limit", "4g"),
    "-m": ("4g", "mem_limit", "4g"),
    "--memory-swap": ("8g", "memswap_limit", "8g"),
    "--cpus": ("1.5", "nano_cpus", 1_500_000_000),
    "--cpuset-cpus": ("0-3", "cpuset_cpus", "0-3"),
    "--pids-limit": ("100", "pids_limit", 100),
    "--tmpfs": ("/scratch:size=1g", "tmpfs", {"/scratch": "size=1g"}),
    "--workdir": ("/tmp", "working_dir", "/tmp"),
    "-w": ("/tmp", "working_dir", "/tmp"),
    "--entrypoint": ("/bin/sh", "entrypoint", "/bin/sh"),
    "--hostname": ("box", "hostname", "box"),
    "-h": ("box", "hostname", "box"),
    "--add-host": ("db:10.0.0.1", "extra_hosts", ["db:10.0.0.1"]),
}
SWITCHES = {"--privileged": "privileged", "--init": "init"}


def test_the_tables_cover_every_flag() -> None:
    assert set(VALUED) | set(SWITCHES) | {"--rm"} == set(FLAGS)


@pytest.mark.parametrize("flag", sorted(VALUED))
def test_a_flag_and_its_value_as_two_words_or_one(flag: str) -> None:
    value, key, expected = VALUED[flag]
    assert parse(f"{flag} {value}") == {key: expected}
    assert parse(f"{flag}={value}") == {key: expected}


@pytest.mark.parametrize("flag", sorted(f for f in VALUED if not f.startswith("--")))
def test_a_short_flag_with_its_value_attached(flag: str) -> None:
    value, key, expected = VALUED[flag]
    assert parse(f"{flag}{value}") == {key: expected}


def test_attached_short_forms_as_docker_takes_them() -> None:
    assert parse("-eA=1 -v/a:/b -uroot -w/x") == {
        "environment": {"A": "1"},
        "volumes": ["/a:/b:rw"],
        "user": "root",
        "working_dir": "/x",
    }


@pytest.mark.parametrize(("flag", "key"), sorted(SWITCHES.items()))
def test_a_switch_alone_or_with_a_truth_value(flag: str, key: str) -> None:
    assert parse(flag) == {key: True}
    assert parse(f"{flag}=true") == {key: True}
    assert parse(f"{flag}=false") == {key: False}  # not silently turned on
    with pytest.raises(RunOptionsError, match=f"^{FIELD}: {flag}: takes true or false, got 'maybe'$"):
        parse(f"{flag}=maybe")


def test_rm_is_ignored_as_we_always_remove() -> None:
    assert parse("--rm --shm-size 1g") == {"shm_size": "1g"}


def test_env_without_a_value_takes_the_hosts_or_nothing() -> None:
    assert parse("-e HOME -e UNSET --env X=1", {"HOME": "/root"}) == {"environment": {"HOME": "/root", "X": "1"}}
    assert parse("-e UNSET", {}) == {}


def test_lists_keep_every_entry_in_order() -> None:
    got = parse("-v /tmp:/t:ro --volume /tmp:/u --cap-add A --cap-add B --add-host a:1.2.3.4 --add-host b:::1")
    assert got == {
        "volumes": ["/tmp:/t:ro", "/tmp:/u:rw"],  # one host path twice: both mounts stay, the first read-only
        "cap_add": ["A", "B"],
        "extra_hosts": ["a:1.2.3.4", "b:::1"],
    }


def test_an_unsupported_flag_names_the_card_the_field_and_the_flag() -> None:
    for text, flag in (("--shm-size 1g --oom-score-adj 5", "--oom-score-adj"), ("-it", "-it"), ("run.sh", "run.sh")):
        with pytest.raises(RunOptionsError) as raised:
            parse(text)
        message = str(raised.value)
        assert message.startswith(f"{FIELD}: unsupported flag {flag!r} (supported: --add-host, ")
        assert "\n" not in message


@pytest.mark.parametrize("flag", ["--shm-size", "-e", "--volume", "-w"])
def test_a_value_missing_at_the_end(flag: str) -> None:
    with pytest.raises(RunOptionsError, match=f"^{FIELD}: {flag} needs a value$"):
        parse(f"--init {flag}")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("--ulimit nofile", "--ulimit: a ulimit must be NAME=SOFT[:HARD], got 'nofile'"),
        ("--ulimit nofile=x:2", "--ulimit: a ulimit must be NAME=SOFT[:HARD], got 'nofile=x:2'"),
        ("-v /only", "-v: a volume must be HOST:CONTAINER[:ro|rw], got '/only'"),
        ("-v :/c", "-v: a volume must be HOST:CONTAINER[:ro|rw], got ':/c'"),
        ("-v /h:/c:ro:extra", "-v: a volume must be HOST:CONTAINER[:ro|rw], got '/h:/c:ro:extra'"),
        ("--volume /h:/c:rx", "--volume: volume mode must be ro or rw, got 'rx'"),
        ("-e =1", "-e: an env entry must be NAME=VALUE or NAME, got '=1'"),
        ("--add-host db", "--add-host: a host must be NAME:ADDRESS, got 'db'"),
        ("--pids-limit many", "--pids-limit: must be a whole number, got 'many'"),
        ("--cpus two", "--cpus: must be a number of CPUs, got 'two'"),
        ("--shm-size '1g", "No closing quotation"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_field(text: str, message: str) -> None:
    with pytest.raises(RunOptionsError) as raised:
        parse(text)
    assert str(raised.value) == f"{FIELD}: {message}"


def test_merge_adds_lists_without_duplicates_merges_the_environment_and_the_card_wins() -> None:
    base = {
        **default_options("madengine", "AMD", host_has_fuse=False),
        "cpuset_cpus": "0",  # the context's docker_cpus
        "environment": {"A": "base", "B": "base"},
        "volumes": ["/data:/data:rw"],
    }
    card = parse("--cap-add SYS_ADMIN --cap-add NET_ADMIN --cpuset-cpus 2-3 -e B=card -e C=card -u 1000 -v /tmp:/t:ro")
    merged = merge_options(base, card)
    assert merged["cap_add"] == ["SYS_PTRACE", "SYS_ADMIN", "NET_ADMIN"]
    assert merged["environment"] == {"A": "base", "B": "card", "C": "card"}
    assert (merged["cpuset_cpus"], merged["user"], merged["network_mode"]) == ("2-3", "1000", "host")
    assert merged["volumes"] == ["/data:/data:rw", "/tmp:/t:ro"]
    assert base["cap_add"] == ["SYS_PTRACE", "SYS_ADMIN"]  # the defaults are not changed in place


def test_merge_keeps_a_card_volume_on_the_same_host_path_as_ours_and_takes_the_dict_form() -> None:
    ours = {"volumes": {"/data": {"bind": "/data_dlm_0", "mode": "ro"}}}  # as a hook may give it
    merged = merge_options(ours, parse("-v /data:/card"))
    assert merged["volumes"] == ["/data:/data_dlm_0:ro", "/data:/card:rw"]


def test_cli_flags_take_volumes_and_hosts_in_either_form() -> None:
    listed = cli_flags({"volumes": ["/tmp:/t:ro", "/tmp:/u:rw"], "extra_hosts": ["db:10.0.0.1"]})
    assert listed == ["--volume", "/tmp:/t:ro", "--volume", "/tmp:/u:rw", "--add-host", "db:10.0.0.1"]
    mapped = cli_flags({"volumes": {"/tmp": {"bind": "/t", "mode": "ro"}}, "extra_hosts": {"db": "10.0.0.1"}})
    assert mapped == ["--volume", "/tmp:/t:ro", "--add-host", "db:10.0.0.1"]
    assert cli_flags(parse("-v /tmp:/t:ro --volume /tmp:/u")) == listed[:4]

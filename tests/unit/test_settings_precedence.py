"""Options, ini and models.json: which value wins, and which values are refused (parsed in-process by pytester)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_madengine.settings import DEFAULT_TIMEOUT, Settings, read_settings
from pytest_madengine.zoo.context import RunContext


@pytest.fixture(autouse=True)
def _no_secrets_from_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in [k for k in os.environ if "MAD_SECRETS" in k]:
        monkeypatch.delenv(key)


def settings(pytester: pytest.Pytester, *args: str) -> Settings:
    return read_settings(pytester.parseconfig(*args))


def refused(pytester: pytest.Pytester, *args: str) -> str:
    with pytest.raises(pytest.UsageError) as info:
        settings(pytester, *args)
    return str(info.value)


def test_defaults_without_any_option(pytester: pytest.Pytester) -> None:
    here = pytester.path
    assert settings(pytester) == Settings(
        archs=(),
        build_args={},
        perf_csv=here / "perf.csv",
        log_dir=here / "madengine_logs",
        timeout_option=None,
        timeout_default=DEFAULT_TIMEOUT,
        guest_os="UBUNTU",
        ignore_skip_gpu_arch=False,
        gpus=None,
        probe_timeout=5.0,
        lease_log=None,
        keep_containers="never",
        build_only=False,
        rebuild=False,
        manifest_out=None,
        manifest=None,
        registry=None,
        credential_file=here / "credential.json",
        verbose=0,
        baseline=None,
        max_regression=None,
        json_out=None,
        html_out=None,
        context=RunContext(),
        secrets={},
        tags=(),
        reap=False,
    )
    assert DEFAULT_TIMEOUT == 7200  # the documented default limit of a model's run


def test_every_option_is_read_into_its_setting(pytester: pytest.Pytester, tmp_path: Path) -> None:
    here = pytester.path
    elsewhere = tmp_path / "abs"
    got = settings(
        pytester,
        *("--madengine-arch", "gfx90a,gfx942", "--madengine-arch", "sm_90"),
        *("--madengine-build-arg", "BASE_DOCKER=rocm/x:1", "--madengine-build-arg", " FLAGS =-O2 -g=3"),
        *("--madengine-perf-csv", "out/perf.csv", "--madengine-log-dir", str(elsewhere)),
        *("--madengine-timeout", "30", "--madengine-guest-os", "centos", "--madengine-ignore-skip-gpu-arch"),
        *("--madengine-gpus", "0,2-3", "--madengine-probe-timeout", "0.5", "--madengine-lease-log", "leases.jsonl"),
        *("--madengine-keep-containers", "on-failure", "--madengine-build-only", "--madengine-rebuild"),
        *("--madengine-manifest-out", "build_manifest.json", "--madengine-registry", "localhost:5000/team"),
        *("--madengine-credential-file", "creds/credential.json", "--madengine-baseline", "old.csv"),
        *("--madengine-max-regression", "5%", "--madengine-json", "r.json", "--madengine-html", "r.html"),
        *("--madengine-tags", "nlp", "--madengine-tags", "bert:batch=8", "--madengine-reap", "-vv"),
    )
    assert got.archs == ("gfx90a", "gfx942", "sm_90")
    assert got.build_args == {"BASE_DOCKER": "rocm/x:1", "FLAGS": "-O2 -g=3"}  # key trimmed, value kept whole
    assert (got.perf_csv, got.log_dir) == (here / "out" / "perf.csv", elsewhere)
    assert (got.timeout_option, got.guest_os, got.ignore_skip_gpu_arch) == (30, "CENTOS", True)
    assert (got.gpus, got.probe_timeout, got.lease_log) == ("0,2-3", 0.5, here / "leases.jsonl")
    assert (got.keep_containers, got.build_only, got.rebuild, got.reap) == ("on-failure", True, True, True)
    assert (got.manifest_out, got.manifest, got.registry) == (here / "build_manifest.json", None, "localhost:5000/team")
    assert got.credential_file == here / "creds" / "credential.json"
    assert (got.baseline, got.max_regression) == (here / "old.csv", 5.0)
    assert (got.json_out, got.html_out) == (here / "r.json", here / "r.html")
    assert (got.tags, got.verbose) == (("nlp", "bert:batch=8"), 2)


def test_manifest_and_context_file_are_read_relative_to_the_invocation_dir(pytester: pytest.Pytester) -> None:
    pytester.path.joinpath("ctx.json").write_text(json.dumps({"docker_gpus": "1"}))
    got = settings(pytester, "--madengine-manifest", "m.json", "--madengine-context-file", "ctx.json")
    assert got.manifest == pytester.path / "m.json"
    assert got.gpus == "1"


# -- timeout: --madengine-timeout, then models.json, then the ini default ----------------------------------------


def test_timeout_option_wins_over_models_json_and_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmadengine_timeout = 60\n")
    got = settings(pytester, "--madengine-timeout", "15")
    assert got.timeout_for(300) == (15, "--madengine-timeout")
    assert got.timeout_for(0) == (15, "--madengine-timeout")


def test_timeout_option_zero_means_no_limit_even_over_models_json(pytester: pytest.Pytester) -> None:
    assert settings(pytester, "--madengine-timeout", "0").timeout_for(300) == (0, "--madengine-timeout")


def test_models_json_timeout_wins_over_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmadengine_timeout = 60\n")
    got = settings(pytester)
    assert got.timeout_for(300) == (300, "models.json")
    assert got.timeout_for(1) == (1, "models.json")


@pytest.mark.parametrize("model_timeout", [0, -1])
def test_ini_default_applies_to_models_without_a_timeout(pytester: pytest.Pytester, model_timeout: int) -> None:
    pytester.makeini("[pytest]\nmadengine_timeout = 60\n")
    assert settings(pytester).timeout_for(model_timeout) == (60, "default")


def test_without_ini_the_default_is_two_hours(pytester: pytest.Pytester) -> None:
    assert settings(pytester).timeout_for(0) == (7200, "default")


def test_ini_timeout_zero_means_no_limit(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmadengine_timeout = 0\n")
    assert settings(pytester).timeout_for(0) == (0, "default")


def test_blank_ini_timeout_falls_back_to_the_default(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmadengine_timeout =\n")
    assert settings(pytester).timeout_default == DEFAULT_TIMEOUT


def test_a_non_integer_ini_timeout_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmadengine_timeout = soon\n")
    assert refused(pytester) == "ini madengine_timeout must be an integer, got 'soon'"


def test_a_negative_timeout_option_is_a_usage_error(pytester: pytest.Pytester) -> None:
    expected = "--madengine-timeout must be >= 0 (or -1: the default), got -2"
    assert refused(pytester, "--madengine-timeout", "-2") == expected


def test_timeout_minus_one_is_the_default_as_in_madengine(pytester: pytest.Pytester) -> None:
    chosen = settings(pytester, "--madengine-timeout", "-1")
    assert chosen.timeout_option is None and chosen.timeout_for(30) == (30, "models.json")


def test_a_non_integer_timeout_option_is_refused(pytester: pytest.Pytester) -> None:
    assert "--madengine-timeout" in refused(pytester, "--madengine-timeout", "1.5")


# -- arch: the option, else the ini list ---------------------------------------------------------------------------


def test_arch_option_wins_over_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmadengine_arch = gfx90a, gfx942\n")
    assert settings(pytester).archs == ("gfx90a", "gfx942")
    assert settings(pytester, "--madengine-arch", "sm_90").archs == ("sm_90",)


def test_an_unknown_arch_is_a_usage_error_naming_the_option(pytester: pytest.Pytester) -> None:
    message = refused(pytester, "--madengine-arch", "banana")
    assert message.startswith("--madengine-arch: unknown GPU architecture 'banana'")


def test_an_unknown_arch_in_the_ini_is_refused_too(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmadengine_arch = banana\n")
    assert "'banana'" in refused(pytester)


# -- guest OS and GPU pool: the option, then the madengine context, then the default -----------------------------


def test_guest_os_option_wins_over_context_and_is_upper_cased(pytester: pytest.Pytester) -> None:
    context = ("--madengine-context", "{'guest_os': 'centos', 'docker_gpus': '0-1'}")
    assert settings(pytester, *context).guest_os == "CENTOS"
    assert settings(pytester, *context, "--madengine-guest-os", "rhel").guest_os == "RHEL"
    assert settings(pytester, "--madengine-guest-os", "rhel").guest_os == "RHEL"


def test_gpus_option_wins_over_context(pytester: pytest.Pytester) -> None:
    context = ("--madengine-context", '{"docker_gpus": "0-1"}')
    assert settings(pytester, *context).gpus == "0-1"
    assert settings(pytester, *context, "--madengine-gpus", "3").gpus == "3"


def test_context_option_wins_over_context_file_key_by_key(pytester: pytest.Pytester) -> None:
    pytester.path.joinpath("ctx.json").write_text(json.dumps({"guest_os": "centos", "docker_gpus": "2"}))
    got = settings(pytester, "--madengine-context-file", "ctx.json", "--madengine-context", '{"guest_os": "rhel"}')
    assert (got.guest_os, got.gpus) == ("RHEL", "2")


def test_a_bad_context_is_a_usage_error(pytester: pytest.Pytester) -> None:
    assert refused(pytester, "--madengine-context", "[1]").startswith("madengine context: ")


# -- build args, registry, regression threshold, combinations --------------------------------------------------


def test_a_later_build_arg_wins(pytester: pytest.Pytester) -> None:
    got = settings(
        pytester, "--madengine-build-arg", "A=1", "--madengine-build-arg", "A=2", "--madengine-build-arg", "B="
    )
    assert got.build_args == {"A": "2", "B": ""}


@pytest.mark.parametrize("bad", ["NOEQUALS", "=value", " =value"])
def test_a_build_arg_without_key_or_equals_is_a_usage_error(pytester: pytest.Pytester, bad: str) -> None:
    assert refused(pytester, "--madengine-build-arg", bad) == f"--madengine-build-arg expects KEY=VALUE, got {bad!r}"


def test_a_malformed_registry_is_a_usage_error(pytester: pytest.Pytester) -> None:
    assert refused(pytester, "--madengine-registry", "nonamespace").startswith("--madengine-registry: expected HOST")


def test_manifest_cannot_go_with_build_only(pytester: pytest.Pytester) -> None:
    message = refused(pytester, "--madengine-manifest", "m.json", "--madengine-build-only")
    assert message == "--madengine-manifest runs prebuilt images: it cannot go with --madengine-build-only"


@pytest.mark.parametrize(("text", "value"), [("5%", 5.0), ("2.5", 2.5), ("0", 0.0)])
def test_max_regression_is_a_percentage(pytester: pytest.Pytester, text: str, value: float) -> None:
    assert settings(pytester, "--madengine-max-regression", text).max_regression == value


@pytest.mark.parametrize("bad", ["lots", "-5%"])
def test_a_bad_max_regression_is_a_usage_error(pytester: pytest.Pytester, bad: str) -> None:
    assert refused(pytester, f"--madengine-max-regression={bad}").startswith("--madengine-max-regression: ")


def test_keep_containers_takes_only_its_three_choices(pytester: pytest.Pytester) -> None:
    for choice in ("never", "on-failure", "always"):
        assert settings(pytester, "--madengine-keep-containers", choice).keep_containers == choice
    assert "invalid choice" in refused(pytester, "--madengine-keep-containers", "sometimes")


def test_secrets_come_from_mad_secrets_variables(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAD_SECRETS_HFTOKEN", "hf_x")
    monkeypatch.setenv("MY_MAD_SECRETS", "y")
    monkeypatch.setenv("MAD_SECRET", "not one")
    assert settings(pytester).secrets == {"MAD_SECRETS_HFTOKEN": "hf_x", "MY_MAD_SECRETS": "y"}


def test_secrets_are_kept_out_of_the_repr(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAD_SECRETS_HFTOKEN", "hf_very_secret")
    assert "hf_very_secret" not in repr(settings(pytester))

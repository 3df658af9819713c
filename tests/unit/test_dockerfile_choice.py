"""Which Dockerfiles a model's `dockerfile` prefix names, which of them an arch uses, and arch names."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_madengine.zoo.archs import AMD, NVIDIA, ArchError, parse_arch_list, skipped_arch, vendor_of
from pytest_madengine.zoo.dockerfiles import (
    Dockerfile,
    DockerfileCache,
    candidates,
    left_out,
    read_context_header,
    select,
)
from pytest_madengine.zoo.models import ModelsFileError, ModelSpec


def spec(root: Path, prefix: str, name: str = "m") -> ModelSpec:
    return ModelSpec(name=name, source=root / "models.json", lineno=0, root=root, dockerfile=prefix, scripts="x")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -- candidates: `ls <prefix>.*` -------------------------------------------------------------------------------------


def test_candidates_are_the_prefix_dot_files_in_name_order_with_their_headers(tmp_path: Path) -> None:
    docker = tmp_path / "docker"
    nvidia = write(docker / "m.ubuntu.nvidia.Dockerfile", "# CONTEXT {'gpu_vendor': 'NVIDIA', 'guest_os': 'UBUNTU'}\n")
    amd = write(docker / "m.ubuntu.amd.Dockerfile", "# CONTEXT {'gpu_vendor': 'AMD'}\nFROM x\n")
    plain = write(docker / "m.txt", "FROM y\n")
    write(docker / "m_other.ubuntu.amd.Dockerfile", "FROM z\n")  # another prefix
    write(docker / "mm.Dockerfile", "FROM z\n")
    (docker / "m.dir.Dockerfile").mkdir()  # not a file
    no_header = "no '# CONTEXT' header in its first 5 lines"
    assert candidates(spec(tmp_path, "docker/m")) == [
        Dockerfile(plain, "txt", None, False, no_header),
        Dockerfile(amd, "ubuntu.amd", {"gpu_vendor": "AMD"}, True),
        Dockerfile(nvidia, "ubuntu.nvidia", {"gpu_vendor": "NVIDIA", "guest_os": "UBUNTU"}, True),
    ]


def test_a_variant_is_never_empty(tmp_path: Path) -> None:
    write(tmp_path / "docker" / "m.Dockerfile", "FROM x\n")
    write(tmp_path / "docker" / "m.", "FROM x\n")
    assert [(d.variant, d.base_name, d.exact) for d in candidates(spec(tmp_path, "docker/m"))] == [
        ("m.", "m.", False),  # nothing after the prefix: the file name
        ("m.Dockerfile", "m", True),  # the card's own file, named exactly
    ]


@pytest.mark.parametrize("prefix", ["docker/nope", "missing_dir/m"])
def test_a_prefix_without_files_is_an_error_naming_model_and_prefix(tmp_path: Path, prefix: str) -> None:
    write(tmp_path / "docker" / "m.ubuntu.amd.Dockerfile", "FROM x\n")
    with pytest.raises(ModelsFileError) as info:
        candidates(spec(tmp_path, prefix, name="bert"))
    assert str(info.value) == (
        f"{tmp_path / 'models.json'}: model 'bert': field 'dockerfile' prefix '{prefix}' "
        f"matches no file ({tmp_path / prefix}.*)"
    )


def test_a_bad_header_leaves_the_file_without_context_and_says_why(tmp_path: Path) -> None:
    bad = write(tmp_path / "docker" / "m.amd.Dockerfile", "# CONTEXT {'gpu_vendor': AMD}\n")
    (found,) = candidates(spec(tmp_path, "docker/m", name="bert"))
    assert (found.path, found.context) == (bad, None)
    assert "'# CONTEXT' header is not a Python dict literal" in found.header_problem


# -- MAD's naming: exact names first, no wildcard headers ------------------------------------------------------------

AMD_CTX = {"gpu_vendor": "AMD", "guest_os": "UBUNTU"}
NVIDIA_CTX = {"gpu_vendor": "NVIDIA", "guest_os": "UBUNTU"}


def test_exact_names_win_over_longer_files_of_other_cards(tmp_path: Path) -> None:
    """`docker/vllm` is a card's prefix; `docker/vllm.dsv4.ubuntu.amd.Dockerfile` is another card's."""
    docker = tmp_path / "docker"
    own = write(docker / "vllm.ubuntu.amd.Dockerfile", "# CONTEXT {'gpu_vendor': 'AMD', 'guest_os': 'UBUNTU'}\n")
    write(docker / "vllm.dsv4.ubuntu.amd.Dockerfile", "# CONTEXT {'gpu_vendor': 'AMD', 'guest_os': 'UBUNTU'}\n")
    found = candidates(spec(tmp_path, "docker/vllm"))
    assert [d.path for d in select(found, AMD_CTX)] == [own]
    assert left_out(found) == []


def test_a_headerless_exact_file_is_filtered_by_its_name(tmp_path: Path) -> None:
    docker = tmp_path / "docker"
    amd = write(docker / "m.ubuntu.amd.Dockerfile", "FROM rocm\n")
    nvidia = write(docker / "m.ubuntu.nvidia.Dockerfile", "FROM cuda\n")
    found = candidates(spec(tmp_path, "docker/m"))
    assert [d.path for d in select(found, AMD_CTX)] == [amd]
    assert [d.path for d in select(found, NVIDIA_CTX)] == [nvidia]  # never the AMD file
    assert [d.path for d in select(found, {"guest_os": "UBUNTU"})] == [amd, nvidia]  # cpu: no vendor filter
    assert select(found, {"gpu_vendor": "AMD", "guest_os": "CENTOS"}) == []


def test_an_exact_name_filters_on_the_keys_its_header_does_not_give(tmp_path: Path) -> None:
    """A header without `gpu_vendor` does not make `*.ubuntu.amd.Dockerfile` an NVIDIA file; the keys the
    header gives still win over the name."""
    docker = tmp_path / "docker"
    amd = write(docker / "m.ubuntu.amd.Dockerfile", "# CONTEXT {'guest_os': 'UBUNTU'}\nFROM rocm\n")
    nvidia = write(docker / "m.ubuntu.nvidia.Dockerfile", "# CONTEXT {'guest_os': 'CENTOS'}\nFROM cuda\n")
    found = candidates(spec(tmp_path, "docker/m"))
    assert [d.path for d in select(found, AMD_CTX)] == [amd]
    assert select(found, NVIDIA_CTX) == []  # the AMD file by its name; the NVIDIA one by its header's OS
    assert [d.path for d in select(found, {"gpu_vendor": "NVIDIA", "guest_os": "CENTOS"})] == [nvidia]
    assert [d.path for d in select(found, {"guest_os": "UBUNTU"})] == [amd]  # cpu: no vendor filter


def test_the_cards_own_plain_file_serves_every_arch(tmp_path: Path) -> None:
    own = write(tmp_path / "docker" / "m.Dockerfile", "FROM x\n")
    found = candidates(spec(tmp_path, "docker/m"))
    assert [d.path for d in select(found, AMD_CTX)] == [own] == [d.path for d in select(found, NVIDIA_CTX)]


def test_without_exact_names_headers_decide_and_headerless_files_are_left_out(tmp_path: Path) -> None:
    docker = tmp_path / "docker"
    variant = write(docker / "m.fast.ubuntu.amd.Dockerfile", "# CONTEXT {'gpu_vendor': 'AMD'}\n")
    lost = write(docker / "m.slow.ubuntu.amd.Dockerfile", "FROM x\n")
    found = candidates(spec(tmp_path, "docker/m"))
    assert [d.path for d in select(found, AMD_CTX)] == [variant]
    assert [d.path for d in left_out(found)] == [lost]


# -- DockerfileCache: one listing per prefix for the models of one models.json ------------------------------------------


def test_a_cache_lists_each_prefix_once_for_the_models_sharing_it(tmp_path: Path) -> None:
    docker = tmp_path / "docker"
    amd = write(docker / "m.ubuntu.amd.Dockerfile", "# CONTEXT {'gpu_vendor': 'AMD'}\n")
    cache = DockerfileCache()
    first = cache.candidates(spec(tmp_path, "docker/m", name="a"))
    assert (
        first == candidates(spec(tmp_path, "docker/m")) == [Dockerfile(amd, "ubuntu.amd", {"gpu_vendor": "AMD"}, True)]
    )
    write(docker / "m.ubuntu.nvidia.Dockerfile", "FROM x\n")  # after the listing: this cache does not see it
    first.clear()  # each model's list is its own
    assert cache.candidates(spec(tmp_path, "docker/m", name="b")) == [
        Dockerfile(amd, "ubuntu.amd", {"gpu_vendor": "AMD"}, True)
    ]
    assert [d.variant for d in DockerfileCache().candidates(spec(tmp_path, "docker/m"))] == [
        "ubuntu.amd",
        "ubuntu.nvidia",
    ]


def test_a_cache_keeps_prefixes_and_roots_apart(tmp_path: Path) -> None:
    write(tmp_path / "docker" / "m.one.Dockerfile", "FROM x\n")
    write(tmp_path / "docker" / "n.two.Dockerfile", "FROM x\n")
    other = tmp_path / "other"
    write(other / "docker" / "m.three.Dockerfile", "FROM x\n")
    cache = DockerfileCache()
    assert [d.variant for d in cache.candidates(spec(tmp_path, "docker/m"))] == ["one"]
    assert [d.variant for d in cache.candidates(spec(tmp_path, "docker/n"))] == ["two"]
    assert [d.variant for d in cache.candidates(spec(other, "docker/m"))] == ["three"]
    assert [d.variant for d in cache.candidates(spec(tmp_path, "docker/m"))] == ["one"]


def test_a_cached_missing_prefix_names_each_model(tmp_path: Path) -> None:
    cache = DockerfileCache()
    for name in ("bert", "gpt"):
        with pytest.raises(ModelsFileError) as info:
            cache.candidates(spec(tmp_path, "docker/nope", name=name))
        assert str(info.value) == (
            f"{tmp_path / 'models.json'}: model '{name}': field 'dockerfile' prefix 'docker/nope' "
            f"matches no file ({tmp_path / 'docker/nope'}.*)"
        )


# -- the `# CONTEXT` header --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "header"),
    [
        ("# CONTEXT {'gpu_vendor': 'AMD'}\n", {"gpu_vendor": "AMD"}),
        ("FROM x\n\n\n\n# CONTEXT {'a': 1}  \n", {"a": 1}),  # the fifth line still counts
        ("FROM x\n\n\n\n\n# CONTEXT {'a': 1}\n", {}),  # the sixth does not
        ("# CONTEXT {1: 'x'}\n", {"1": "x"}),  # keys become strings
        ("# CONTEXT {'a': 1}\n# CONTEXT {'b': 2}\n", {"a": 1}),  # the first header wins
        ("#CONTEXT {'a': 1}\n", {}),
        ("# CONTEXT {'note': 'see # CONTEXT below'}\n", {"note": "see # CONTEXT below"}),  # first marker only
        ("", {}),
    ],
)
def test_context_header(tmp_path: Path, text: str, header: dict[str, object]) -> None:
    assert read_context_header(write(tmp_path / "x.Dockerfile", text)) == header


def test_a_dockerfile_that_is_not_utf8_is_still_read(tmp_path: Path) -> None:
    path = tmp_path / "latin1.Dockerfile"
    path.write_bytes(b"# caf\xe9\n# CONTEXT {'gpu_vendor': 'AMD'}\nARG BASE_DOCKER=rocm/x:1 # \xff\n")
    assert read_context_header(path) == {"gpu_vendor": "AMD"}
    assert Dockerfile(path, "latin1").default_base_docker() == "rocm/x:1"


def test_a_header_that_is_not_a_literal_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "x.Dockerfile", "# CONTEXT {'a': open('x')}\n")
    with pytest.raises(ModelsFileError, match=r"'# CONTEXT' header is not a Python dict literal: "):
        read_context_header(path)


def test_a_header_with_a_syntax_error_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "x.Dockerfile", "# CONTEXT {'a': \n")
    with pytest.raises(ModelsFileError, match=r"'# CONTEXT' header is not a Python dict literal: "):
        read_context_header(path)


def test_a_header_that_is_not_a_dict_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "x.Dockerfile", "# CONTEXT ['AMD']\n")
    with pytest.raises(ModelsFileError) as info:
        read_context_header(path)
    assert str(info.value) == f"{path}: '# CONTEXT' header must be a dict, got list"


def test_an_unreadable_dockerfile_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ModelsFileError) as info:
        read_context_header(tmp_path / "gone.Dockerfile")
    assert str(info.value).startswith(f"{tmp_path / 'gone.Dockerfile'}: cannot read Dockerfile: ")


# -- choosing by context ------------------------------------------------------------------------------------------------


def dockerfile(**context: object) -> Dockerfile:
    return Dockerfile(Path("docker/m.x.Dockerfile"), "x", context)


def test_every_header_key_the_context_has_must_agree_case_insensitively() -> None:
    amd_ubuntu = dockerfile(gpu_vendor="AMD", guest_os="UBUNTU")
    assert amd_ubuntu.matches({"gpu_vendor": "amd", "guest_os": "ubuntu"})
    assert amd_ubuntu.matches({"gpu_vendor": "AMD"})  # keys the context lacks do not filter
    assert amd_ubuntu.matches({"other": "x"})
    assert not amd_ubuntu.matches({"gpu_vendor": "NVIDIA", "guest_os": "UBUNTU"})
    assert not amd_ubuntu.matches({"gpu_vendor": "AMD", "guest_os": "CENTOS"})
    assert dockerfile().matches({"gpu_vendor": "NVIDIA"})
    assert dockerfile(n=1).matches({"n": "1"})  # values compared as text


def test_select_keeps_the_matching_files_in_order() -> None:
    amd, nvidia, any_vendor = dockerfile(gpu_vendor="AMD"), dockerfile(gpu_vendor="NVIDIA"), dockerfile()
    assert select([amd, nvidia, any_vendor], {"gpu_vendor": "NVIDIA"}) == [nvidia, any_vendor]
    assert select([amd, nvidia, any_vendor], {}) == [amd, nvidia, any_vendor]


# -- the Dockerfile's own facts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "base"),
    [
        ("ARG BASE_DOCKER=rocm/pytorch:latest\nFROM $BASE_DOCKER\n", "rocm/pytorch:latest"),
        ('# CONTEXT {}\n  ARG   BASE_DOCKER="nvcr.io/x:1"\n', "nvcr.io/x:1"),
        ("ARG BASE_DOCKER='a/b'  # comment\n", "a/b"),
        ("ARG BASE_DOCKER=registry/img:FIX\n", "registry/img:FIX"),  # only quotes are stripped
        ("FROM ubuntu\n", ""),
        ("# ARG BASE_DOCKER=commented/out\n", ""),
    ],
)
def test_default_base_docker(tmp_path: Path, text: str, base: str) -> None:
    assert Dockerfile(write(tmp_path / "m.Dockerfile", text), "m").default_base_docker() == base


def test_default_base_docker_of_an_unreadable_file_is_empty(tmp_path: Path) -> None:
    assert Dockerfile(tmp_path / "gone.Dockerfile", "gone").default_base_docker() == ""


def test_base_name_drops_the_dockerfile_suffix_only() -> None:
    assert Dockerfile(Path("docker/m.ubuntu.amd.Dockerfile"), "ubuntu.amd").base_name == "m.ubuntu.amd"
    assert Dockerfile(Path("docker/m.txt"), "txt").base_name == "m.txt"


# -- arch names ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "vendor"),
    [
        ("cpu", None),
        ("gfx942", AMD),
        ("GFX90A", AMD),
        ("gfx1100", AMD),
        ("sm_90", NVIDIA),
        ("sm80", NVIDIA),
        ("SM_90a", NVIDIA),
        ("H100", NVIDIA),
        ("a100", NVIDIA),
        ("RTX4090", NVIDIA),
        ("GH200", NVIDIA),
        ("GB200", NVIDIA),
        ("NVIDIA L40S", NVIDIA),
        ("MI300X", AMD),  # an AMD name, though it has the shape of NVIDIA's short names
        ("mi250", AMD),
        ("AMD Instinct MI210", AMD),
    ],
)
def test_vendor_of_an_arch(arch: str, vendor: str | None) -> None:
    assert vendor_of(arch) == vendor


@pytest.mark.parametrize("arch", ["banana", "gfx", "gfxzz", "sm_", "CPU", ""])
def test_an_unknown_arch_is_an_error_saying_what_is_expected(arch: str) -> None:
    with pytest.raises(ArchError) as info:
        vendor_of(arch)
    assert str(info.value) == (
        f"unknown GPU architecture {arch!r}: expected gfx* or an AMD Instinct name (MI300X), "
        "sm_* or an NVIDIA name (A100, H100), or 'cpu'"
    )


def test_arch_lists_split_on_commas_and_spaces_drop_blanks_and_duplicates_keep_order() -> None:
    assert parse_arch_list(["gfx942, gfx90a", "sm_90 gfx942", ",,", " cpu "]) == ["gfx942", "gfx90a", "sm_90", "cpu"]
    assert parse_arch_list([]) == []


def test_an_arch_list_with_an_unknown_name_is_refused() -> None:
    with pytest.raises(ArchError, match="'banana'"):
        parse_arch_list(["gfx942,banana"])


def test_skip_gpu_arch_names_the_arch_or_the_nvidia_product() -> None:
    assert skipped_arch(("gfx908", " GFX942 "), "gfx942") == "GFX942"  # trimmed, case-insensitive
    assert skipped_arch(("gfx94",), "gfx942") is None
    assert skipped_arch(("A100", "H100"), "sm_90", "NVIDIA H100 80GB HBM3") == "H100"
    assert skipped_arch(("A100",), "sm_80", "NVIDIA A100-SXM4-80GB") == "A100"
    assert skipped_arch(("H100",), "sm_90", "Tesla H100") is None  # only `NVIDIA <product>` names count
    assert skipped_arch(("NVIDIA",), "sm_90", "NVIDIA H100") is None
    assert skipped_arch(("sm_90",), "sm_90", "NVIDIA H100") == "sm_90"
    assert skipped_arch((), "gfx942") is None

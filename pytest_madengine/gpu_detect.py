"""GPU detection for AMD and NVIDIA hosts by asking the vendor tools found on PATH.

Detection never raises for a broken host: every probe that fails, hangs or prints something we
cannot read becomes a warning naming the tool, and the next tool is tried. NVIDIA wins when
nvidia-smi lists GPUs, as in madengine. On AMD hosts amd-smi is preferred (indices, UUIDs, render
nodes, market names, gfx targets), rocminfo fills in or replaces the gfx names, and rocm-smi is
the fallback when amd-smi is missing or fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["Detection", "Gpu", "detect_gpus"]

AMD = "AMD"
NVIDIA = "NVIDIA"

# Seconds to wait for the pipes to close after the process group was killed. Only a grandchild
# that left the group (setsid) can hold them that long; we give up on its output rather than hang.
_DRAIN_AFTER_KILL = 1.0

_GFX = re.compile(r"gfx[0-9a-f]+")
_NVIDIA_QUERY = "index,name,uuid,compute_cap,driver_version"
_NVIDIA_QUERY_OLD = "index,name,uuid,driver_version"  # drivers before compute_cap was queryable


@dataclass(frozen=True)
class Gpu:
    """One GPU as the host's vendor tool numbers it."""

    index: int
    vendor: str
    arch: str
    product_name: str
    uuid: str = ""
    render_node: str = ""


@dataclass(frozen=True)
class Detection:
    """What detect_gpus found, plus why it may have found less than the host has."""

    gpus: tuple[Gpu, ...]
    warnings: tuple[str, ...]
    driver_version: str = ""

    @property
    def vendor(self) -> str | None:
        """The vendor of the GPUs; a host is treated as single-vendor, as madengine does."""
        return self.gpus[0].vendor if self.gpus else None

    @property
    def archs(self) -> tuple[str, ...]:
        """Distinct known archs in index order; unknown ("") archs are left out."""
        seen: list[str] = []
        for gpu in sorted(self.gpus, key=lambda g: g.index):
            if gpu.arch and gpu.arch not in seen:
                seen.append(gpu.arch)
        return tuple(seen)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form; vendor and archs are included for readers and ignored by from_dict."""
        return {
            "gpus": [_gpu_to_dict(gpu) for gpu in self.gpus],
            "warnings": list(self.warnings),
            "driver_version": self.driver_version,
            "vendor": self.vendor,
            "archs": list(self.archs),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Detection:
        """Rebuild from to_dict output (e.g. a detection recorded by another process)."""
        gpus_raw = data.get("gpus", [])
        warnings_raw = data.get("warnings", [])
        if not isinstance(gpus_raw, list) or not isinstance(warnings_raw, list):
            raise ValueError("detection data needs 'gpus' and 'warnings' lists")
        gpus = tuple(_gpu_from_dict(item) for item in gpus_raw)
        warnings = tuple(_expect_str(w, "warning") for w in warnings_raw)
        driver = _expect_str(data.get("driver_version", ""), "driver_version")
        return cls(gpus=gpus, warnings=warnings, driver_version=driver)

    def header_line(self) -> str:
        """One line for the pytest header, grouping identical GPUs so 8 GPUs don't take 8 lines."""
        if not self.gpus:
            return "madengine GPUs: none detected"
        groups: dict[tuple[str, str, str], int] = {}
        for gpu in sorted(self.gpus, key=lambda g: g.index):
            key = (gpu.vendor, gpu.arch or "unknown-arch", gpu.product_name)
            groups[key] = groups.get(key, 0) + 1
        parts = []
        for (vendor, arch, name), count in groups.items():
            parts.append(f"{count} x {vendor} {arch}" + (f" ({name})" if name else ""))
        return "madengine GPUs: " + ", ".join(parts)


def detect_gpus(env: Mapping[str, str] | None = None, timeout: float = 5.0) -> Detection:
    """Detect the host's GPUs with the vendor tools on env's PATH; each probe is cut at timeout s."""
    prober = _Prober(dict(os.environ if env is None else env), timeout)
    nvidia = _detect_nvidia(prober)
    if nvidia is not None and nvidia.gpus:
        return Detection(nvidia.gpus, tuple(prober.warnings), nvidia.driver_version)
    amd = _detect_amd(prober)
    return Detection(amd.gpus, tuple(prober.warnings), amd.driver_version)


# --------------------------------------------------------------------------- running tools


@dataclass
class _Run:
    ok: bool
    stdout: str = ""
    error: str = ""  # why not ok, phrased to follow the tool's name
    timed_out: bool = False


@dataclass
class _Prober:
    """Runs vendor tools, remembering which ones hung so a wedged tool costs one timeout only."""

    env: dict[str, str]
    timeout: float
    warnings: list[str] = field(default_factory=list)
    _dead: set[str] = field(default_factory=set)

    def which(self, tool: str) -> str | None:
        # An env without PATH finds nothing, rather than silently falling back to ours.
        return shutil.which(tool, path=self.env.get("PATH", ""))

    def present(self, tool: str) -> bool:
        return tool not in self._dead and self.which(tool) is not None

    def run(self, tool: str, args: Sequence[str]) -> _Run:
        exe = self.which(tool)
        if exe is None or tool in self._dead:
            return _Run(ok=False, error="is not available")
        result = _run_bounded([exe, *args], self.env, self.timeout)
        if result.timed_out:
            self._dead.add(tool)
        return result

    def warn(self, tool: str, args: Sequence[str], result: _Run) -> None:
        command = " ".join([tool, *args])
        if result.timed_out:
            self.warnings.append(f"{tool} timed out after {self.timeout:.1f} s ({command})")
            return
        head, _, detail = result.error.partition(": ")
        self.warnings.append(f"{tool} {head} ({command})" + (f": {detail}" if detail else ""))

    def warn_unparseable(self, tool: str, args: Sequence[str], stdout: str) -> None:
        command = " ".join([tool, *args])
        sample = repr(_first_line(stdout)[:80]) if stdout.strip() else "nothing"
        self.warnings.append(f"{tool} printed unparseable output ({command}): {sample}")


def _run_bounded(argv: list[str], env: Mapping[str, str], timeout: float) -> _Run:
    """subprocess.run, except that a timeout kills the whole process group.

    subprocess.run kills only the direct child on timeout; a shell wrapper's children keep
    running (and may keep the pipes open). A new session makes the tool a group leader we can kill.
    """
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            start_new_session=True,
        )
    except OSError as exc:
        return _Run(ok=False, error=f"could not be started: {exc.strerror or exc}")
    with proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            # If a grandchild escaped the group it may still hold the pipes: the with-block closes them.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=_DRAIN_AFTER_KILL)
            return _Run(ok=False, timed_out=True, error="timed out")
    stdout = out.decode("utf-8", errors="replace")
    if proc.returncode != 0:
        message = _first_line(err.decode("utf-8", errors="replace")) or _first_line(stdout)
        detail = f": {message}" if message else ""
        return _Run(ok=False, stdout=stdout, error=f"exited with status {proc.returncode}{detail}")
    return _Run(ok=True, stdout=stdout)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:200]
    return ""


# --------------------------------------------------------------------------- NVIDIA


@dataclass
class _Found:
    gpus: tuple[Gpu, ...] = ()
    driver_version: str = ""


def _detect_nvidia(prober: _Prober) -> _Found | None:
    if not prober.present("nvidia-smi"):
        return None
    args = [f"--query-gpu={_NVIDIA_QUERY}", "--format=csv,noheader,nounits"]
    result = prober.run("nvidia-smi", args)
    with_cc = True
    if not result.ok and not result.timed_out:
        # Old drivers reject the compute_cap field; ask again without it before giving up.
        old_args = [f"--query-gpu={_NVIDIA_QUERY_OLD}", "--format=csv,noheader,nounits"]
        retry = prober.run("nvidia-smi", old_args)
        if retry.ok:
            args, result, with_cc = old_args, retry, False
    if not result.ok:
        prober.warn("nvidia-smi", args, result)
        return None
    found = _parse_nvidia_csv(result.stdout, with_cc)
    if found is None:
        prober.warn_unparseable("nvidia-smi", args, result.stdout)
    return found


def _parse_nvidia_csv(text: str, with_cc: bool) -> _Found | None:
    """Parse `index, name, uuid[, compute_cap], driver_version` rows; None when any row is malformed."""
    gpus: list[Gpu] = []
    drivers: list[str] = []
    tail = 3 if with_cc else 2  # fields after the name, which may itself contain commas
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = [part.strip() for part in line.split(",")]
        if len(parts) < 2 + tail or not parts[0].isdigit():
            return None
        name = ", ".join(parts[1:-tail])
        uuid = parts[-tail]
        arch = _sm_arch(parts[-2]) if with_cc else ""
        drivers.append(parts[-1])
        gpus.append(Gpu(int(parts[0]), NVIDIA, arch, name, uuid=_known(uuid)))
    gpus.sort(key=lambda g: g.index)
    return _Found(tuple(gpus), _known(drivers[0]) if drivers else "")


def _sm_arch(compute_cap: str) -> str:
    """'9.0' -> 'sm_90', '12.0' -> 'sm_120'; anything else (e.g. '[N/A]') is unknown."""
    match = re.fullmatch(r"(\d+)\.(\d+)", compute_cap)
    return f"sm_{match.group(1)}{match.group(2)}" if match else ""


# --------------------------------------------------------------------------- AMD


@dataclass
class _AmdRow:
    """A GPU being assembled from several AMD tools."""

    index: int
    node_id: int | None = None
    uuid: str = ""
    render: str = ""
    arch: str = ""
    name: str = ""


@dataclass
class _Agent:
    """A GPU agent from rocminfo or a card from rocm-smi."""

    node_id: int | None
    arch: str
    name: str
    uuid: str = ""


def _detect_amd(prober: _Prober) -> _Found:
    rows = _amd_smi_rows(prober)
    driver = ""
    if rows:
        _fill_from_amd_smi_static(prober, rows)
        driver = _amd_smi_rocm_version(prober)
    agents = _rocminfo_agents(prober)
    cards = _rocm_smi_cards(prober) if not rows else None
    if not rows:
        base = agents or cards or []
        rows = [_AmdRow(i, a.node_id, a.uuid, "", a.arch, a.name) for i, a in enumerate(base)]
        if base is agents and cards:
            _merge_agents(rows, cards)
    elif agents:
        _merge_agents(rows, agents)
    gpus = tuple(
        Gpu(
            index=row.index,
            vendor=AMD,
            arch=row.arch,
            product_name=row.name,
            uuid=row.uuid,
            render_node=f"/dev/dri/{row.render}" if row.render else f"/dev/dri/renderD{128 + row.index}",
        )
        for row in sorted(rows, key=lambda r: r.index)
    )
    return _Found(gpus, driver)


def _amd_smi_rows(prober: _Prober) -> list[_AmdRow]:
    """GPU indices, KFD nodes, UUIDs and (ROCm 6.4+, `list -e`) render nodes from amd-smi."""
    if not prober.present("amd-smi"):
        return []
    args = ["list", "-e", "--json"]
    result = prober.run("amd-smi", args)
    if not result.ok and not result.timed_out:
        # amd-smi before ROCm 6.4 has no -e; plain list still gives indices and UUIDs.
        args = ["list", "--json"]
        result = prober.run("amd-smi", args)
    if not result.ok:
        prober.warn("amd-smi", args, result)
        return []
    entries = _json_gpu_entries(result.stdout)
    if entries is None:
        prober.warn_unparseable("amd-smi", args, result.stdout)
        return []
    rows = []
    for entry in entries:
        index = _int_or_none(entry.get("gpu"))
        if index is None:
            continue
        render = _known(str(entry.get("render", "")))
        rows.append(
            _AmdRow(
                index=index,
                node_id=_int_or_none(entry.get("node_id")),
                uuid=_known(str(entry.get("uuid", ""))),
                render=render.removeprefix("/dev/dri/") if render.startswith(("renderD", "/dev/")) else "",
            )
        )
    return rows


def _fill_from_amd_smi_static(prober: _Prober, rows: list[_AmdRow]) -> None:
    args = ["static", "--asic", "--json"]
    result = prober.run("amd-smi", args)
    if not result.ok:
        prober.warn("amd-smi", args, result)
        return
    entries = _json_gpu_entries(result.stdout)
    if entries is None:
        prober.warn_unparseable("amd-smi", args, result.stdout)
        return
    by_index = {row.index: row for row in rows}
    for entry in entries:
        index = _int_or_none(entry.get("gpu"))
        row = by_index.get(index) if index is not None else None
        asic = entry.get("asic")
        if row is None or not isinstance(asic, dict):
            continue
        row.name = row.name or _known(str(asic.get("market_name", "")))
        row.arch = row.arch or _gfx(str(asic.get("target_graphics_version", "")))


def _amd_smi_rocm_version(prober: _Prober) -> str:
    args = ["version", "--json"]
    result = prober.run("amd-smi", args)
    if not result.ok:
        prober.warn("amd-smi", args, result)
        return ""
    data = _loads_json(result.stdout)
    items = data if isinstance(data, list) else [data]
    for item in items:
        if isinstance(item, dict) and "rocm_version" in item:
            return _known(str(item["rocm_version"]))
    return ""


def _rocminfo_agents(prober: _Prober) -> list[_Agent]:
    """GPU agents in rocminfo's order (KFD node order, which is also HIP's order)."""
    if not prober.present("rocminfo"):
        return []
    result = prober.run("rocminfo", [])
    if not result.ok:
        prober.warn("rocminfo", [], result)
        return []
    agents = _parse_rocminfo(result.stdout)
    if agents is None:
        prober.warn_unparseable("rocminfo", [], result.stdout)
        return []
    return agents


def _parse_rocminfo(text: str) -> list[_Agent] | None:
    """Parse the "*******/Agent N/*******" blocks; None when there are none at all.

    Only the agent's own fields (two-space indent) count: the ISA and pool sub-blocks have their
    own "Name:" lines. CPU agents, and GPU agents without a gfx name, are skipped.
    """
    blocks: list[dict[str, str]] = []
    for line in text.splitlines():
        if re.fullmatch(r"Agent \d+", line.strip()) and not line.startswith(" "):
            blocks.append({})
            continue
        match = re.match(r"^  (\S[^:]*):\s*(.*?)\s*$", line)
        if blocks and match and match.group(1) not in blocks[-1]:
            blocks[-1][match.group(1)] = match.group(2)
    if not blocks:
        return None
    agents = []
    for block in blocks:
        arch = _gfx(block.get("Name", ""))
        if block.get("Device Type") != "GPU" or not arch:
            continue
        uuid = block.get("Uuid", "")
        agents.append(
            _Agent(
                node_id=_int_or_none(block.get("Node")),
                arch=arch,
                name=_known(block.get("Marketing Name", "")),
                uuid=uuid if uuid.startswith("GPU-") and uuid != "GPU-XX" else "",
            )
        )
    return agents


def _rocm_smi_cards(prober: _Prober) -> list[_Agent] | None:
    """Cards from `rocm-smi --showproductname --json`, in rocm-smi's index order."""
    if not prober.present("rocm-smi"):
        return None
    args = ["--showproductname", "--json"]
    result = prober.run("rocm-smi", args)
    if not result.ok:
        prober.warn("rocm-smi", args, result)
        return None
    data = _loads_json(result.stdout)
    if not isinstance(data, dict):
        prober.warn_unparseable("rocm-smi", args, result.stdout)
        return None
    cards: list[tuple[int, _Agent]] = []
    for key, value in data.items():
        match = re.fullmatch(r"card(\d+)", key)
        if not match or not isinstance(value, dict):
            continue  # e.g. the "system" block
        name = _known(str(value.get("Card Series") or value.get("Device Name") or ""))
        arch = _gfx(_fix_rocm_smi_gfx(str(value.get("GFX Version", ""))))
        cards.append((int(match.group(1)), _Agent(_int_or_none(value.get("Node ID")), arch, name)))
    return [agent for _, agent in sorted(cards, key=lambda c: c[0])]


def _fix_rocm_smi_gfx(value: str) -> str:
    """Older rocm-smi printed the stepping in decimal: gfx9010 for gfx90a, gfx9012 for gfx90c."""
    match = re.fullmatch(r"gfx9(\d)(1[0-5])", value)
    return f"gfx9{match.group(1)}{int(match.group(2)):x}" if match else value


def _merge_agents(rows: list[_AmdRow], agents: Sequence[_Agent]) -> None:
    """Fill rows' gaps from agents, matching KFD node ids when both sides have them, else position."""
    by_node = {a.node_id: a for a in agents if a.node_id is not None}
    use_nodes = bool(by_node) and all(row.node_id in by_node for row in rows)
    if not use_nodes and len(agents) != len(rows):
        return  # no safe way to pair them up
    ordered = sorted(rows, key=lambda r: r.index)
    for position, row in enumerate(ordered):
        agent = by_node[row.node_id] if use_nodes and row.node_id is not None else agents[position]
        row.arch = row.arch or agent.arch
        row.name = row.name or agent.name
        row.uuid = row.uuid or agent.uuid


# --------------------------------------------------------------------------- helpers


def _loads_json(text: str) -> object:
    """json.loads that tolerates warning lines printed before the document; None when unreadable."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    starts = [i for i in (text.find("["), text.find("{")) if i >= 0]
    if not starts:
        return None
    try:
        return json.loads(text[min(starts) :])
    except ValueError:
        return None


def _json_gpu_entries(text: str) -> list[dict[str, object]] | None:
    """The per-GPU objects of amd-smi JSON: a bare list (ROCm 6.x) or one wrapped as {"gpu_data": [...]}."""
    data = _loads_json(text)
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        data = data.get("gpu_data", lists[0] if len(lists) == 1 else None)
    if not isinstance(data, list):
        return None
    return [item for item in data if isinstance(item, dict)]


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _known(value: str) -> str:
    """Vendor tools print N/A (or [N/A]) for unknown values; we use ""."""
    value = value.strip()
    return "" if value.upper().strip("[]") in {"N/A", "NA", "UNKNOWN", ""} else value


def _gfx(value: str) -> str:
    match = _GFX.fullmatch(value.strip().lower())
    return match.group(0) if match else ""


def _expect_str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, not {type(value).__name__}")
    return value


def _gpu_to_dict(gpu: Gpu) -> dict[str, object]:
    return {
        "index": gpu.index,
        "vendor": gpu.vendor,
        "arch": gpu.arch,
        "product_name": gpu.product_name,
        "uuid": gpu.uuid,
        "render_node": gpu.render_node,
    }


def _gpu_from_dict(item: object) -> Gpu:
    if not isinstance(item, Mapping):
        raise ValueError(f"a GPU entry must be a mapping, not {type(item).__name__}")
    index = item.get("index")
    if not isinstance(index, int) or isinstance(index, bool):
        raise ValueError(f"GPU index must be an int, not {index!r}")
    return Gpu(
        index=index,
        vendor=_expect_str(item.get("vendor"), "GPU vendor"),
        arch=_expect_str(item.get("arch", ""), "GPU arch"),
        product_name=_expect_str(item.get("product_name", ""), "GPU product_name"),
        uuid=_expect_str(item.get("uuid", ""), "GPU uuid"),
        render_node=_expect_str(item.get("render_node", ""), "GPU render_node"),
    )

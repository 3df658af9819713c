"""AMD detection: amd-smi first, rocminfo to fill in or replace gfx names, rocm-smi as the fallback."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .model import AMD, Found, Gpu
from .probe import Prober, known

__all__ = ["detect_amd", "parse_rocminfo"]


_GFX = re.compile(r"gfx[0-9a-f]+")


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


def detect_amd(prober: Prober) -> Found:
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
    return Found(gpus, driver)


def _amd_smi_rows(prober: Prober) -> list[_AmdRow]:
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
        render = known(str(entry.get("render", "")))
        rows.append(
            _AmdRow(
                index=index,
                node_id=_int_or_none(entry.get("node_id")),
                uuid=known(str(entry.get("uuid", ""))),
                render=render.removeprefix("/dev/dri/") if render.startswith(("renderD", "/dev/")) else "",
            )
        )
    return rows


def _fill_from_amd_smi_static(prober: Prober, rows: list[_AmdRow]) -> None:
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
        row.name = row.name or known(str(asic.get("market_name", "")))
        row.arch = row.arch or _gfx(str(asic.get("target_graphics_version", "")))


def _amd_smi_rocm_version(prober: Prober) -> str:
    args = ["version", "--json"]
    result = prober.run("amd-smi", args)
    if not result.ok:
        prober.warn("amd-smi", args, result)
        return ""
    data = _loads_json(result.stdout)
    items = data if isinstance(data, list) else [data]
    for item in items:
        if isinstance(item, dict) and "rocm_version" in item:
            return known(str(item["rocm_version"]))
    return ""


def _rocminfo_agents(prober: Prober) -> list[_Agent]:
    """GPU agents in rocminfo's order (KFD node order, which is also HIP's order)."""
    if not prober.present("rocminfo"):
        return []
    result = prober.run("rocminfo", [])
    if not result.ok:
        prober.warn("rocminfo", [], result)
        return []
    agents = parse_rocminfo(result.stdout)
    if agents is None:
        prober.warn_unparseable("rocminfo", [], result.stdout)
        return []
    return agents


def parse_rocminfo(text: str) -> list[_Agent] | None:
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
                name=known(block.get("Marketing Name", "")),
                uuid=uuid if uuid.startswith("GPU-") and uuid != "GPU-XX" else "",
            )
        )
    return agents


def _rocm_smi_cards(prober: Prober) -> list[_Agent] | None:
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
        name = known(str(value.get("Card Series") or value.get("Device Name") or ""))
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


def _gfx(value: str) -> str:
    match = _GFX.fullmatch(value.strip().lower())
    return match.group(0) if match else ""

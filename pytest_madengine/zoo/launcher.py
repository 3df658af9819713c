"""MAD_MULTI_NODE_RUNNER: the launcher command a MAD run script puts in front of its program."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TORCHRUN = ("torchrun", "megatron", "megatron-lm", "torchtitan")
SELF_LAUNCHED = ("vllm", "sglang", "sglang-disagg", "primus")


def launcher_of(card: Mapping[str, Any], context: Mapping[str, Any], environ: Mapping[str, str]) -> str:
    """madengine's order: the context's `distributed.launcher`, the card's, then $MAD_LAUNCHER."""
    for block in (context.get("distributed"), card.get("distributed")):
        if isinstance(block, Mapping) and block.get("launcher"):
            return str(block["launcher"]).strip().lower()
    return environ.get("MAD_LAUNCHER", "").strip().lower()


def multi_node_runner(launcher: str, ngpus: int) -> str:
    """The single-node form, computed for every model from its own lease (madengine keeps the first
    model's for the whole session). torchrun and unknown launchers: torchrun standalone."""
    if launcher == "deepspeed":
        return f"deepspeed --num_gpus={ngpus}"
    if launcher in SELF_LAUNCHED:
        return ""
    return f"torchrun --standalone --nproc_per_node={ngpus}"


def nnodes_of(card: Mapping[str, Any], context: Mapping[str, Any]) -> int:
    """How many nodes a card runs on: the context's `distributed.nnodes`, the card's, its top-level
    `nnodes`, else 1 (a value that is not a positive whole number counts as 1)."""
    values = [
        block.get("nnodes")
        for block in (context.get("distributed"), card.get("distributed"))
        if isinstance(block, Mapping)
    ]
    for value in [*values, card.get("nnodes")]:
        try:
            if value not in (None, "") and int(value) >= 1:
                return int(value)
        except (TypeError, ValueError):
            continue
    return 1


def multi_node_form(launcher: str, nnodes: int) -> str:
    """MAD_MULTI_NODE_RUNNER for one node of a multi-node job. It names the shell variables `rank`,
    `addr`, `port` and `count` that the node's runner sets (its SLURM node id, the first node's address,
    the job's port, the node's GPUs) and expands; everything else here is a number."""
    if launcher == "deepspeed":
        return (
            f"deepspeed --num_nodes={nnodes} --num_gpus=$count --no_ssh --node_rank=$rank "
            "--master_addr=$addr --master_port=$port"
        )
    if launcher in SELF_LAUNCHED:
        return ""
    return (
        f"torchrun --nnodes={nnodes} --nproc_per_node=$count --node_rank=$rank --master_addr=$addr --master_port=$port"
    )

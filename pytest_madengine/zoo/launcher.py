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

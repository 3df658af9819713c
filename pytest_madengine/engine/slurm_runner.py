"""The shell runner an item's SLURM job executes on its node, sent on srun's standard input.

It carries everything (workspace archive, environment, secrets), so the nodes need no shared
filesystem and nothing secret lands on a command line or a disk: the environment reaches docker
through a process substitution. It starts the container with the GPUs SLURM allocated, streams the
container's output, enforces the model's limit from the container's start, frames its facts and
files for the worker, and removes the container whatever happens (TERM/INT from scancel included).
"""

from __future__ import annotations

import base64
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

FRAME = "===pmad:"  # a line the worker takes apart: ===pmad:<kind> <fields>===
SLURM_JOB_LABEL = "pytest-madengine.slurm-job"

_RENDER_OF = r"""render_of() {
  local want=$1 index=0 props minor
  for props in $(ls -d /sys/class/kfd/kfd/topology/nodes/*/ 2>/dev/null | sort -V); do
    grep -q '^gpu_id [1-9]' "$props/properties" 2>/dev/null || continue
    if [ "$index" = "$want" ]; then
      minor=$(awk '/^drm_render_minor/ {print $2}' "$props/properties")
      [ -n "$minor" ] && echo "/dev/dri/renderD$minor"
      return
    fi
    index=$((index + 1))
  done
}"""


@dataclass(frozen=True)
class RunnerInput:
    image: str
    command: Sequence[str]
    flags: Sequence[str]  # docker create flags (labels, run options), environment excepted
    environment: Mapping[str, str] = field(repr=False)
    archive: bytes = field(repr=False, default=b"")
    fetch: Sequence[str] = ()  # run-directory files to frame back
    limit_s: float = 0.0  # 0: none
    vendor: str | None = None  # how to pass the allocated GPUs: AMD, NVIDIA, or none
    registry_image: str = ""  # pulled when the node lacks the image
    nnodes: int = 1  # more than one: each node's runner sets the rendezvous variables for its rank
    node_runner: str = ""  # MAD_MULTI_NODE_RUNNER's multi-node form, naming $rank, $addr, $port, $count


# Set by each node's runner of a multi-node job; any value the environment had for them is replaced.
RENDEZVOUS = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "NNODES",
    "NODE_RANK",
    "WORLD_SIZE",
    "NPROC_PER_NODE",
    "MAD_MULTI_NODE_RUNNER",
)
_SAFE_FORM = re.compile(r"[A-Za-z0-9_=$ .-]*")


def _heredoc(tag: str, body: str) -> str:
    if f"\n{tag}\n" in f"\n{body}\n":
        raise ValueError(f"the runner's {tag} block would end early")
    return f"<<'{tag}'\n{body}\n{tag}"


def _env_block(environment: Mapping[str, str]) -> str:
    lines = [f"{k}={str(v).replace(chr(10), ' ')}" for k, v in environment.items()]
    return "\n".join(lines)


def _rendezvous(job: RunnerInput) -> str:
    """Bash that sets `rank`, `addr`, `port` and the `multi` flags: the first node's address (SLURM's
    NodeAddr for it), a port from the environment or derived from the job id, and this node's rank."""
    if job.nnodes <= 1:
        return "rank=0\nmulti=()"
    if not _SAFE_FORM.fullmatch(job.node_runner):
        raise ValueError(f"unexpected characters in the multi-node runner form {job.node_runner!r}")
    port = str(job.environment.get("MASTER_PORT", ""))
    port = port if port.isdigit() else "$((29500 + job % 1000))"
    return f"""rank=${{SLURM_NODEID:-0}}
first=$(scontrol show hostnames "${{SLURM_JOB_NODELIST:-$node}}" 2>/dev/null | head -n 1)
first=${{first:-$node}}
addr=$(scontrol show node "$first" -o 2>/dev/null | tr ' ' '\\n' | sed -n 's/^NodeAddr=//p')
addr=${{addr:-$first}}
port={port}
multi=(-e "MASTER_ADDR=$addr" -e "MASTER_PORT=$port" -e "NNODES={job.nnodes}" -e "NODE_RANK=$rank"
  -e "WORLD_SIZE=$(({job.nnodes} * count))" -e "NPROC_PER_NODE=$count" -e "MAD_MULTI_NODE_RUNNER={job.node_runner}")"""


def runner_script(job: RunnerInput) -> str:
    """The bash script; every word from the user is quoted, and secrets stay in here-documents."""
    image = shlex.quote(job.image)
    flags = " ".join(shlex.quote(f) for f in job.flags)
    command = " ".join(shlex.quote(c) for c in job.command)
    limit = int(job.limit_s + 0.999) if job.limit_s > 0 else 0
    ensure = (  # only where a node can pull it: the manifest's registry image
        f"docker image inspect {image} >/dev/null 2>&1 || {{ docker pull -q {shlex.quote(job.registry_image)} && "
        f"docker tag {shlex.quote(job.registry_image)} {image}; }} >/dev/null 2>&1"
        if job.registry_image
        else ":"
    )
    gpu_flags = {  # only where the node has the devices (a test cluster's fake GPUs have none)
        "AMD": "[ -e /dev/kfd ] && { gpuflags=(--device /dev/kfd --group-add video); for i in ${gpus//,/ }; do "
        'r=$(render_of "$i"); [ -n "$r" ] && gpuflags+=(--device "$r"); done; }',
        "NVIDIA": 'command -v nvidia-smi >/dev/null && gpuflags=(--gpus "\\"device=$gpus\\"")',
    }.get(job.vendor or "", ":")
    fetch = "\n".join(
        ['if [ "$rank" = 0 ]; then :'] * bool(job.fetch)
        + [
            f'echo "{FRAME}file {name}==="; tar -C "$ws/myworkspace/run_directory" -cf - {shlex.quote(name)} '
            f'2>/dev/null | base64; echo "{FRAME}end==="'
            for name in job.fetch
        ]
        + ["fi"] * bool(job.fetch)
    )
    environment = job.environment
    if job.nnodes > 1:
        environment = {k: v for k, v in environment.items() if k not in RENDEZVOUS}
    archive = base64.encodebytes(job.archive).decode().rstrip("\n")
    return _TEMPLATE.format(
        FRAME=FRAME,
        SLURM_JOB_LABEL=SLURM_JOB_LABEL,
        _RENDER_OF=_RENDER_OF,
        image=image,
        flags=flags,
        command=command,
        limit=limit,
        ensure=ensure,
        gpu_flags=gpu_flags,
        fetch=fetch,
        archive=archive,
        env_heredoc=_heredoc("PMAD_ENV", _env_block(environment)),
        rendezvous=_rendezvous(job),
    )


_TEMPLATE = """#!/bin/bash
# written by pytest-madengine: one model on this node
set -u
job=${{SLURM_JOB_ID:-0}}
node=${{SLURMD_NODENAME:-$(hostname -s)}}
gpus=${{SLURM_STEP_GPUS:-${{SLURM_JOB_GPUS:-}}}}
IFS=, read -ra ids <<<"$gpus"; count=${{#ids[@]}}
echo "{FRAME}placed node=$node job=$job gpus=$gpus==="
# Each runner leaves a marker on its node while its container may exist; only a runner killed with
# SIGKILL (which cannot remove its container) leaves it behind. A later runner that finds markers of
# jobs SLURM no longer lists removes those jobs' containers, in the background: housekeeping that the
# model need not wait for, and no docker call at all while no other job's marker is there. Only on
# SLURM's own word: a squeue that fails (a busy controller) lists nothing, and must not make every
# running job's container stale. Markers are read before the jobs: a job that starts in between has
# no marker yet.
marks=/tmp/pmad-jobs
declare -A others=()
for m in "$marks"/*.*; do
  [ -e "$m" ] || continue
  m=${{m##*/}}; m=${{m%%.*}}
  [ "$m" = "$job" ] || others[$m]=1
done
if [ ${{#others[@]}} -gt 0 ] && command -v squeue >/dev/null 2>&1; then (
  listed=$(squeue -h -o %i 2>/dev/null) || exit 0
  declare -A running=()
  while read -r id; do [ -n "$id" ] && running[$id]=1; done <<<"$listed"
  for other in "${{!others[@]}}"; do
    [ -n "${{running[$other]:-}}" ] && continue
    stale=$(docker ps -aq --filter "label={SLURM_JOB_LABEL}=$other" 2>/dev/null)
    [ -n "$stale" ] && docker rm -f $stale
    rm -f "$marks/$other".*
  done ) >/dev/null 2>&1 &
fi
{rendezvous}
{_RENDER_OF}
gpuflags=()
if [ -n "$gpus" ]; then {gpu_flags}; fi
# The workspace is unpacked on the node and bind-mounted: no copy into the container and none out of it
# (the result files are read here).
ws=$(mktemp -d /tmp/pmad-ws.XXXXXX) || {{ echo "{FRAME}error no temporary directory on node $node==="; exit 3; }}
mark="$marks/$job.$rank.$$"
clean() {{ rm -rf "$ws" "$mark" 2>/dev/null || {{ docker run --rm --pull never -v "$ws:/w" --entrypoint rm {image} -rf /w/myworkspace; rm -rf "$ws"; }} >/dev/null 2>&1; }}
name="pmad-$job-$rank-$$"
attached=
# scancel's TERM can come while docker run is still creating the container: the CLI goes first, so no
# request of it is still to come, then the container by its name (again, should its creation have
# still been under way).
gone() {{
  [ -n "$attached" ] && {{ kill -KILL "$attached"; wait "$attached"; }} 2>/dev/null
  for _ in 1 2 3; do
    docker rm -f "$name" >/dev/null 2>&1
    [ -z "$(docker ps -aq --filter "name=^/$name\\$" 2>/dev/null)" ] && break
  done
}}
trap 'trap "" TERM INT HUP; gone; clean; exit 143' TERM INT HUP
base64 -d <<'PMAD_ARCHIVE' | tar -x -C "$ws" || {{ echo "{FRAME}error cannot unpack the workspace on node $node==="; clean; exit 3; }}
{archive}
PMAD_ARCHIVE
mkdir -p "$ws/myworkspace/run_directory" "$ws/myworkspace/scripts" && chmod -R a+rwX "$ws/myworkspace"
{ensure}
{{ [ -d "$marks" ] || mkdir -p -m 1777 "$marks"; : >"$mark"; }} 2>/dev/null
echo "{FRAME}started==="
# Attached in the background: the output streams as it comes, the exit code is the model's, and bash's
# `wait` gives way to scancel's TERM (the trap then removes the container).
docker run --rm --cidfile "$ws/cid" --pull never --name "$name" {flags} "${{gpuflags[@]}}" "${{multi[@]}}" --label {SLURM_JOB_LABEL}="$job" \\
  -v "$ws/myworkspace/run_directory:/myworkspace/run_directory" -v "$ws/myworkspace/scripts:/myworkspace/scripts" \\
  --env-file <(cat {env_heredoc}
) -e MAD_HOST_GPU_IDS="$gpus" -e MAD_RUNTIME_NGPUS="$count" {image} {command} 2>&1 &
attached=$!
watcher=
# A watcher kills the container at the limit; it marks the timeout first (the container can be gone
# while `docker kill` still runs). Its own sleep ends with it, and it holds none of srun's pipes.
if [ {limit} -gt 0 ]; then
  ( trap 'kill "$nap" 2>/dev/null; exit 0' TERM; sleep {limit} & nap=$!; wait "$nap"; : >"$ws/timeout"; docker kill "$name" ) >/dev/null 2>&1 &
  watcher=$!
fi
wait "$attached"; code=$?
if [ "$code" = 125 ] && [ ! -s "$ws/cid" ]; then
  [ -n "$watcher" ] && kill "$watcher" 2>/dev/null
  echo "{FRAME}error cannot create a container of {image} on node $node==="; echo "{FRAME}done==="; clean; exit 3
fi
if [ -e "$ws/timeout" ]; then wait "$watcher"; echo "{FRAME}timeout==="
else [ -n "$watcher" ] && kill "$watcher" 2>/dev/null; echo "{FRAME}exit $code==="; fi
{fetch}
# The container went with its exit (--rm: docker run returns once it is removed); the worker has all
# it needs and judges the result while the workspace goes.
echo "{FRAME}done==="
clean
"""

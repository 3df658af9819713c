"""Build each distinct image once, shared by every item and every xdist worker of a session.

An image is identified by a content hash of its Dockerfile, build context and build args,
kept as an image label: a later session that finds the label does not build at all.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TextIO

import docker
import docker.errors
from filelock import FileLock

from ..errors import MadengineError
from ..zoo.dockerfiles import Dockerfile
from .bases import from_images
from .labels import DOCKERFILE_LABEL, HASH_LABEL
from .registry import RegistryError

LOG_TAIL_LINES = 50


def log_tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


@dataclass(frozen=True)
class BuildRequest:
    """What decides an image: the Dockerfile, its context directory, the arch and the build args."""

    dockerfile: Dockerfile
    context_dir: Path
    arch: str
    build_args: Mapping[str, str] = field(default_factory=dict, repr=False)  # may hold secrets

    def content_hash(self) -> str:
        digest = hashlib.sha256()
        digest.update(b"dockerfile\0" + self.dockerfile.path.read_bytes())
        for path in sorted(p for p in self.context_dir.rglob("*") if p.is_file() and not self._other_recipe(p)):
            digest.update(b"\0file\0" + str(path.relative_to(self.context_dir)).encode() + b"\0")
            digest.update(path.read_bytes())
        for key in sorted(self.build_args):
            digest.update(f"\0arg\0{key}={self.build_args[key]}".encode())
        return digest.hexdigest()

    def _other_recipe(self, path: Path) -> bool:
        """MAD keeps every Dockerfile in the shared `docker/` context: another model's recipe is not
        content of this image, so editing it must not rebuild this one."""
        return path.name.endswith("Dockerfile") and path.resolve() != self.dockerfile.path.resolve()

    @property
    def repository(self) -> str:
        base = re.sub(r"[^a-z0-9._-]", "_", self.dockerfile.base_name.lower()).strip("._-") or "model"
        return f"madengine/{base}"

    def tag_for(self, content_hash: str) -> str:
        arch = re.sub(r"[^A-Za-z0-9_.-]", "_", self.arch)
        return f"{self.repository}:{arch}-{content_hash[:12]}"

    def log_name(self, content_hash: str) -> str:
        """Named after the Dockerfile and arch, plus the hash: two images of one Dockerfile (other
        build args or context) building at once must not share a log."""
        arch = re.sub(r"[^A-Za-z0-9_.-]", "_", self.arch)
        return f"{self.dockerfile.base_name}.{arch}.{content_hash[:12]}.build.log"

    def bases(self) -> list[str]:
        """The images this build starts FROM, as the engine will resolve them."""
        try:
            text = self.dockerfile.path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        return from_images(text, self.build_args)

    @property
    def base_docker(self) -> str:
        """The base actually used: the last stage's FROM, else BASE_DOCKER as madengine reports it."""
        bases = self.bases()
        return bases[-1] if bases else self.build_args.get("BASE_DOCKER") or self.dockerfile.default_base_docker()


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    image_id: str
    build_duration: float  # 0 when an image from an earlier session was reused
    reused: bool
    log_path: str
    base_docker: str
    docker_sha: str
    registry_image: str = ""


class PublishError(MadengineError):
    """The push of a built image failed (once, for every item that needs it)."""

    perf_reason = "image push failed"


class ImageBuildError(MadengineError):
    """The build failed once; every item that needs the image reports this."""

    perf_reason = "image build failed"

    def __init__(self, dockerfile: Path, arch: str, reason: str, log_path: str, tail: str) -> None:
        super().__init__(f"image build failed for {dockerfile} ({arch}): {reason}")
        self.dockerfile = dockerfile
        self.arch = arch
        self.reason = reason
        self.log_path = log_path
        self.tail = tail

    def describe(self) -> str:
        return f"{self}\nbuild log: {self.log_path}\n--- last lines of the build log ---\n{self.tail}"

    def to_dict(self) -> dict[str, str]:
        return {
            "dockerfile": str(self.dockerfile),
            "arch": self.arch,
            "reason": self.reason,
            "log_path": self.log_path,
            "tail": self.tail,
        }


@dataclass(frozen=True)
class BuildPolicy:
    """How images are made: `rebuild` ignores every cache; `pull` refreshes a base image from its
    registry (once per session) before its identity is taken; `progress` shows build steps."""

    rebuild: bool = False
    pull: Callable[[str], None] | None = None
    progress: Callable[[str], None] | None = None


class ImageBuilder:
    """Session-wide build cache; `shared_dir` is common to all xdist workers of the run."""

    def __init__(
        self, client: docker.DockerClient, shared_dir: Path, log_dir: Path, run_id: str, policy: BuildPolicy
    ) -> None:
        self._client = client
        self._state_dir = shared_dir / "builds"
        self._state_dir.mkdir(parents=True, exist_ok=True)
        self._log_dir = log_dir
        self._run_id = run_id
        self._rebuild = policy.rebuild
        self._pull = policy.pull
        self._memo: dict[str, BuiltImage | ImageBuildError] = {}
        self._hashes: dict[tuple[object, ...], str] = {}
        self._identities: dict[str, str] = {}
        self._progress = policy.progress

    def _identity(self, reference: str) -> str:
        """The base image as resolved here (its id), pulled first with --madengine-pull; once per
        reference and process. A base that is not here has no id: the build will say why."""
        if reference not in self._identities:
            if self._pull is not None:
                self._pull_once(reference)
            try:
                self._identities[reference] = self._client.images.get(reference).id or ""
            except (docker.errors.ImageNotFound, docker.errors.APIError):
                self._identities[reference] = f"missing:{reference}"
        return self._identities[reference]

    def _pull_once(self, reference: str) -> None:
        """One pull per base and session, across workers; a failed pull leaves the local image as it is."""
        assert self._pull is not None
        state = self._state_dir / f"pull-{re.sub(r'[^A-Za-z0-9_.-]', '_', reference)}"
        with FileLock(str(state) + ".lock"):
            if state.with_suffix(".done").exists():
                return
            try:
                self._pull(reference)
            finally:
                state.with_suffix(".done").write_text("")

    def get(self, request: BuildRequest) -> BuiltImage:
        # Hashing reads the whole build context: once per distinct request and process, not per item.
        key = (request.dockerfile.path, request.context_dir, request.arch, tuple(sorted(request.build_args.items())))
        content_hash = self._hashes.get(key)
        if content_hash is None:
            identities = "\0".join(self._identity(base) for base in request.bases())
            content_hash = hashlib.sha256(f"{request.content_hash()}\0bases\0{identities}".encode()).hexdigest()
            self._hashes[key] = content_hash
        memo = self._memo.get(content_hash + request.arch)
        if memo is None:
            memo = self._get_locked(request, content_hash)
            self._memo[content_hash + request.arch] = memo
        if isinstance(memo, ImageBuildError):
            raise memo
        return memo

    def _get_locked(self, request: BuildRequest, content_hash: str) -> BuiltImage | ImageBuildError:
        state = self._state_dir / f"{content_hash[:32]}-{request.arch}"
        with FileLock(str(state) + ".lock"):
            if state.with_suffix(".json").exists():
                data = json.loads(state.with_suffix(".json").read_text())
                if "reason" in data:
                    return ImageBuildError(
                        Path(data["dockerfile"]), data["arch"], data["reason"], data["log_path"], data["tail"]
                    )
                return BuiltImage(**data)
            result = self._reuse_or_build(request, content_hash)
            payload = result.to_dict() if isinstance(result, ImageBuildError) else asdict(result)
            state.with_suffix(".json").write_text(json.dumps(payload))
            return result

    def _reuse_or_build(self, request: BuildRequest, content_hash: str) -> BuiltImage | ImageBuildError:
        tag = request.tag_for(content_hash)
        if not self._rebuild:
            try:
                image = self._client.images.get(tag)
            except docker.errors.ImageNotFound:
                image = None
            if image is not None and (image.labels or {}).get(HASH_LABEL) == content_hash:
                base = request.base_docker
                return BuiltImage(
                    tag=tag,
                    image_id=image.id or "",
                    build_duration=0.0,
                    reused=True,
                    log_path="",
                    base_docker=base,
                    docker_sha=self._base_sha(base),
                )
        return self._build(request, content_hash, tag)

    def _build(self, request: BuildRequest, content_hash: str, tag: str) -> BuiltImage | ImageBuildError:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self._log_dir / request.log_name(content_hash)
        started = time.monotonic()
        with log_path.open("w", encoding="utf-8") as log:
            log.write(
                f"# build {tag}\n# dockerfile {request.dockerfile.path}\n# context {request.context_dir}\n"
                f"# build args: {', '.join(sorted(request.build_args)) or 'none'}\n"
            )
            image_id, error = self._stream_build(request, content_hash, tag, log)
        duration = time.monotonic() - started
        if error or not image_id:
            text = log_path.read_text(encoding="utf-8", errors="replace")
            return ImageBuildError(
                request.dockerfile.path,
                request.arch,
                error or "no image produced",
                str(log_path),
                log_tail(text),
            )
        base = request.base_docker
        return BuiltImage(
            tag=tag,
            image_id=image_id,
            build_duration=round(duration, 3),
            reused=False,
            log_path=str(log_path),
            base_docker=base,
            docker_sha=self._base_sha(base),
        )

    def _stream_build(self, request: BuildRequest, content_hash: str, tag: str, log: TextIO) -> tuple[str, str]:
        """Run the engine's build, copying its output to log: (image id, error), either possibly ""."""
        image_id = ""
        error = ""
        try:
            stream = self._client.api.build(
                path=str(request.context_dir),
                dockerfile=str(request.dockerfile.path),
                tag=tag,
                buildargs=dict(request.build_args),
                labels={
                    HASH_LABEL: content_hash,
                    DOCKERFILE_LABEL: str(request.dockerfile.path),
                },
                rm=True,
                forcerm=True,
                pull=False,
                nocache=self._rebuild,
                decode=True,
            )
            for chunk in stream:
                if "stream" in chunk:
                    log.write(str(chunk["stream"]))
                    step = str(chunk["stream"]).strip()
                    if self._progress is not None and step.startswith("Step "):
                        self._progress(f"[build] {tag}: {step}")
                if "status" in chunk:
                    log.write(f"{chunk['status']} {chunk.get('progress', '')}\n")
                if "aux" in chunk and isinstance(chunk["aux"], dict):
                    image_id = str(chunk["aux"].get("ID", image_id))
                if "error" in chunk:
                    error = str(chunk["error"]).strip()
                    log.write(f"ERROR: {error}\n")
                log.flush()
        except (docker.errors.APIError, docker.errors.BuildError, OSError) as exc:
            error = str(exc)
            log.write(f"ERROR: {error}\n")
        return image_id, error

    def publish_once(self, image: BuiltImage, push: Callable[[str], str]) -> BuiltImage:
        """Push an image at most once per session across workers; a failure is remembered too."""
        state = self._state_dir / f"push-{re.sub(r'[^A-Za-z0-9_.-]', '_', image.tag)}"
        with FileLock(str(state) + ".lock"):
            record = state.with_suffix(".json")
            if record.exists():
                data = json.loads(record.read_text())
            else:
                try:
                    data = {"reference": push(image.tag)}
                except RegistryError as exc:
                    data = {"error": str(exc)}
                record.write_text(json.dumps(data))
        if "error" in data:
            raise PublishError(data["error"])
        return replace(image, registry_image=str(data["reference"]))

    def _base_sha(self, base: str) -> str:
        """The base image's digest, else its id, when the engine knows it."""
        if not base:
            return ""
        try:
            image = self._client.images.get(base)
        except (docker.errors.ImageNotFound, docker.errors.APIError):
            return ""
        digests = image.attrs.get("RepoDigests") or []
        if digests:
            return str(digests[0]).split("@", 1)[-1]
        return image.id or ""


def build_args_for(arch: str, user_args: Mapping[str, str]) -> dict[str, str]:
    """MAD_SYSTEM_GPU_ARCHITECTURE plus the user's args; the user's win, as in madengine's context."""
    args = {"MAD_SYSTEM_GPU_ARCHITECTURE": arch}
    args.update(user_args)
    return args


def context_dir_for(root: Path, dockercontext: str, dockerfile: Path | None = None) -> Path:
    """madengine's build context: the card's dockercontext; else the zoo's root when the Dockerfile's
    path names primus (MAD's primus images `COPY scripts/...`) or the zoo has no docker/; else
    `<root>/docker`. The rule, not a guess from the file: an image builds as it does under madengine."""
    if dockercontext:
        return root / dockercontext
    default = root / "docker"
    if not default.is_dir() or (dockerfile is not None and "primus" in _zoo_path(dockerfile, root)):
        return root
    return default


def _zoo_path(dockerfile: Path, root: Path) -> str:
    """The path madengine sees (relative to the zoo), so a zoo kept under a `primus` directory does not count."""
    try:
        return str(dockerfile.relative_to(root))
    except ValueError:
        return dockerfile.name


__all__ = [
    "BuildRequest",
    "BuiltImage",
    "ImageBuildError",
    "ImageBuilder",
    "PublishError",
    "build_args_for",
    "context_dir_for",
    "log_tail",
]

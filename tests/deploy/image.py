"""Build the production image (Dockerfile) offline, cached by the hash of what goes into it.

Docker Hub is out of reach here, so both images the Dockerfile starts from are replaced through
its build arguments: BASE_IMAGE is the debootstrapped `warmbox-base:bookworm` that
sandbox_images/build.py makes, and UV_IMAGE is a local image holding the host's uv binary and a
uv cache with exactly the locked wheels for the base's python, so `uv sync --offline` needs no
index. Both built images are tagged by content hash: a second run with the same sources builds
nothing; a change replaces this worktree's previous image instead of piling up.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from app.core.config import REPO_ROOT

BASE_IMAGE = "warmbox-base:bookworm"
API_REPOSITORY = "warmbox-api-test"
UV_REPOSITORY = "warmbox-uv-offline"
OWNER_LABEL = "warmbox.api-test.owner"
# What the Dockerfile copies into the image, plus the Dockerfile itself.
IMAGE_INPUTS = (
    "Dockerfile",
    ".dockerignore",
    "pyproject.toml",
    "uv.lock",
    "alembic",
    "app",
    "sandbox_images",
    "scripts/prestart.sh",
)
OWNER = hashlib.sha256(str(REPO_ROOT).encode()).hexdigest()[:12]


class ImageBuildError(AssertionError):
    """A build step failed; the message carries its output."""


def run(argv: list[str], *, timeout: float = 600, cwd: Path | None = None) -> str:
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False
    )
    if result.returncode != 0:
        raise ImageBuildError(f"{' '.join(argv[:3])} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout.strip()


def image_id(name: str) -> str | None:
    result = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", name],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def _hash_inputs(*extra: str) -> str:
    digest = hashlib.sha256()
    for name in IMAGE_INPUTS:
        root = REPO_ROOT / name
        files = sorted(root.rglob("*")) if root.is_dir() else [root]
        for path in files:
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                digest.update(path.relative_to(REPO_ROOT).as_posix().encode() + b"\0")
                digest.update(path.read_bytes() + b"\0")
    for value in extra:
        digest.update(value.encode() + b"\0")
    return digest.hexdigest()[:16]


def _uv_binary() -> Path:
    """The uv that runs this suite (`uv run` exports its path as UV), never a shell shim."""
    found = os.environ.get("UV") or shutil.which("uv")
    if found is None:
        raise ImageBuildError("uv is needed to build the production image offline")
    return Path(found).resolve()


def base_python_version() -> str:
    if image_id(BASE_IMAGE) is None:
        raise ImageBuildError(f"{BASE_IMAGE} is missing: run `bash scripts/build-images.sh`")
    return run(
        [
            *("docker", "run", "--rm", "--network", "none", BASE_IMAGE),
            *("python3", "-c", "import platform; print(platform.python_version())"),
        ]
    )


def offline_uv_image(python_version: str) -> str:
    """`uv` plus a cache holding the locked wheels for `python_version`, built once per lock."""
    uv = _uv_binary()
    uv_version = run([str(uv), "--version"])
    lock = (REPO_ROOT / "uv.lock").read_bytes()
    key = hashlib.sha256(lock + f"{uv_version}\0{python_version}".encode()).hexdigest()[:16]
    tag = f"{UV_REPOSITORY}:{key}"
    if image_id(tag) is not None:
        return tag
    (REPO_ROOT / "build").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=REPO_ROOT / "build") as scratch:
        context = Path(scratch)
        shutil.copy2(uv, context / "uv")
        requirements = context / "requirements.txt"
        run(
            [
                *(str(uv), "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project"),
                *("--quiet", "--output-file", str(requirements)),
            ],
            cwd=REPO_ROOT,
        )
        # Installing into a throwaway target for the base's python fills the cache with the
        # very wheels `uv sync` picks inside the image (markers evaluated for that version).
        run(
            [
                *(str(uv), "pip", "install", "--quiet", "--no-deps", "--cache-dir"),
                *(str(context / "cache"), "--target", str(context / "target")),
                *("--python-version", python_version, "--python-platform"),
                *(f"{platform.machine()}-manylinux_2_36", "-r", str(requirements)),
            ]
        )
        (context / "Dockerfile").write_text("FROM scratch\nCOPY uv /uv\nCOPY cache /cache\n")
        run(["docker", "build", "--quiet", "--force-rm", "--label", f"{OWNER_LABEL}={OWNER}",
             "-t", tag, str(context)])  # fmt: skip
    _remove_other_tags(UV_REPOSITORY, keep=tag)
    return tag


def production_image() -> str:
    """Build (or reuse) the production image from this worktree's sources; returns its tag."""
    python_version = base_python_version()
    uv_image = offline_uv_image(python_version)
    tag = f"{API_REPOSITORY}:{_hash_inputs(image_id(BASE_IMAGE) or '', image_id(uv_image) or '')}"
    if image_id(tag) is not None:
        return tag
    run(
        [
            *("docker", "build", "--quiet", "--force-rm", "--network", "none"),
            *("--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "--build-arg", f"UV_IMAGE={uv_image}"),
            *("--build-arg", "UV_SYNC_ARGS=--offline", "--label", f"{OWNER_LABEL}={OWNER}"),
            *("-t", tag, str(REPO_ROOT)),
        ]
    )
    _remove_other_tags(API_REPOSITORY, keep=tag)
    return tag


def _remove_other_tags(repository: str, *, keep: str) -> None:
    """Drop the images this worktree built before from older sources (never another's)."""
    listed = run(
        [
            *("docker", "image", "ls", "--filter", f"label={OWNER_LABEL}={OWNER}"),
            *("--format", "{{.Repository}}:{{.Tag}}", repository),
        ]
    )
    for name in listed.splitlines():
        if name != keep:
            subprocess.run(["docker", "rmi", name], capture_output=True, check=False)

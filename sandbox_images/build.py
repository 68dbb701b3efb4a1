"""Build the sandbox images without a registry: `uv run python -m sandbox_images.build`.

The base image is a Debian bookworm rootfs made by debootstrap from the machine's own apt mirror
and imported into Docker, so nothing is pulled from Docker Hub. Each language (a folder with a
language.json) is one `docker build` of the shared Dockerfile on top of it, or on top of the
language it names in "from" (cpp on c, typescript on javascript: a shared toolchain is installed
once); its packages come from the same mirror. Every image carries a label with a hash of the
sources it was built from, which makes a rebuild of unchanged sources a no-op.

`--base-image IMAGE` (or SANDBOX_BASE_IMAGE) builds the language layers on another Debian-based
image instead of the debootstrapped one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

HERE = Path(__file__).resolve().parent
BASE_DIR = HERE / "base"

BASE_IMAGE = "warmbox-base:bookworm"
SUITE = "bookworm"
BASE_HASH_LABEL = "warmbox.base-hash"
SOURCE_HASH_LABEL = "warmbox.source-hash"
ROOTFS_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
APT_SOURCES = Path("/etc/apt")


class BuildError(Exception):
    """A step of the build failed; the message says which and what to look at."""


def say(message: str) -> None:
    print(f"images: {message}", flush=True)


def hash_tree(dirs: Iterable[Path], root: Path, *, extra: str = "") -> str:
    """Hash the sorted relative paths and bytes of every file under `dirs`.

    Caches are skipped so that running the agent locally does not force a rebuild.
    """
    digest = hashlib.sha256()
    files = sorted(
        path
        for directory in dirs
        if directory.is_dir()
        for path in directory.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    )
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    digest.update(extra.encode())
    return digest.hexdigest()[:32]


def docker(*args: str, capture: bool = True, stdin: int | None = None) -> str:
    result = subprocess.run(
        ["docker", *args], capture_output=capture, text=True, check=False, stdin=stdin
    )
    if result.returncode != 0:
        detail = (result.stderr or result.stdout or "").strip() if capture else ""
        raise BuildError(f"docker {args[0]} failed: {detail[-2000:]}")
    return (result.stdout or "").strip() if capture else ""


def image_info(name: str) -> tuple[str, dict[str, str]] | None:
    """Return (image id, labels) of a local image, or None when it does not exist."""
    result = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}} {{json .Config.Labels}}", name],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        if "No such image" in result.stderr or "No such object" in result.stderr:
            return None
        raise BuildError(f"docker image inspect {name} failed: {result.stderr.strip()}")
    image_id, _, labels = result.stdout.strip().partition(" ")
    return image_id, json.loads(labels) or {}


def remove_replaced(old_id: str | None, name: str) -> None:
    """Remove the image a rebuild replaced, so old layers do not pile up.

    A container of the old image that is still running keeps it alive; that is fine and the
    next build tries again through the dangling-image prune.
    """
    current = image_info(name)
    if old_id is not None and (current is None or current[0] != old_id):
        result = subprocess.run(
            ["docker", "rmi", old_id], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            say(f"kept replaced image {old_id[7:19]} (still in use)")
    for label in (SOURCE_HASH_LABEL, BASE_HASH_LABEL):
        subprocess.run(
            ["docker", "image", "prune", "--force", "--filter", f"label={label}"],
            capture_output=True,
            check=False,
        )


# --- mirror -------------------------------------------------------------------------------------


def _deb822_uris(text: str, suite: str) -> list[str]:
    uris: list[str] = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0].isspace() and key:
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if fields.get("enabled", "yes").lower() == "no":
            continue
        if "deb" in fields.get("types", "").split() and suite in fields.get("suites", "").split():
            uris += fields.get("uris", "").split()
    return uris


def _one_line_uris(text: str, suite: str) -> list[str]:
    uris: list[str] = []
    for line in text.splitlines():
        line = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0])
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "deb" and parts[2] == suite:
            uris.append(parts[1])
    return uris


def find_mirror(suite: str = SUITE, apt_dir: Path = APT_SOURCES) -> str:
    """The first mirror this machine's apt sources use for `suite`, so no host is hard-coded."""
    uris: list[str] = []
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        uris += _deb822_uris(path.read_text(), suite)
    for path in [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]:
        if path.is_file():
            uris += _one_line_uris(path.read_text(), suite)
    usable = [uri for uri in uris if uri.startswith(("http://", "https://", "file:/"))]
    if not usable:
        raise BuildError(
            f"no apt source for '{suite}' in {apt_dir}; pass --mirror or set SANDBOX_DEBIAN_MIRROR"
        )
    return usable[0]


# --- base image ---------------------------------------------------------------------------------


def _packages() -> list[str]:
    lines = (BASE_DIR / "packages.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _unmount_below(root: Path) -> None:
    """Unmount anything a failed debootstrap left mounted inside the rootfs before deleting it."""
    mounts = Path("/proc/mounts").read_text().splitlines()
    targets = [line.split()[1] for line in mounts if line.split()[1].startswith(f"{root}/")]
    for target in sorted(targets, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], check=False)


def build_base(base_hash: str, mirror: str) -> None:
    """Debootstrap a minimal bookworm with python3, trim it and import it as BASE_IMAGE."""
    if shutil.which("debootstrap") is None:
        raise BuildError("debootstrap is not installed (run scripts/setup.sh)")
    workdir = Path(tempfile.mkdtemp(prefix="warmbox-rootfs-", dir="/var/tmp"))
    rootfs = workdir / "rootfs"
    log = workdir.with_suffix(".log")
    try:
        say(f"debootstrap {SUITE} from {mirror} (about a minute)")
        include = ",".join(_packages())
        with log.open("w") as out:
            result = subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={include}", SUITE, rootfs, mirror],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if result.returncode != 0:
            tail = log.read_text()[-2000:]
            raise BuildError(f"debootstrap failed (log kept at {log}):\n{tail}")
        subprocess.run(["sh", BASE_DIR / "trim.sh", rootfs], check=True)
        say(f"importing {BASE_IMAGE}")
        tar = subprocess.Popen(
            ["tar", "--numeric-owner", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE
        )
        try:
            docker(
                "import",
                "--change",
                f"LABEL {BASE_HASH_LABEL}={base_hash}",
                "--change",
                f"ENV PATH={ROOTFS_PATH}",
                "-",
                BASE_IMAGE,
                stdin=tar.stdout.fileno() if tar.stdout else None,
            )
        finally:
            if tar.stdout:
                tar.stdout.close()
            if tar.wait() != 0:
                raise BuildError("tar of the rootfs failed")
        log.unlink(missing_ok=True)
    finally:
        _unmount_below(workdir)
        shutil.rmtree(workdir, ignore_errors=True)


def ensure_base(mirror: str | None, *, force: bool) -> None:
    base_hash = hash_tree([BASE_DIR], HERE)
    current = image_info(BASE_IMAGE)
    if not force and current is not None and current[1].get(BASE_HASH_LABEL) == base_hash:
        return
    started = time.monotonic()
    build_base(base_hash, mirror or find_mirror())
    remove_replaced(current[0] if current else None, BASE_IMAGE)
    say(f"{BASE_IMAGE} built in {time.monotonic() - started:.0f}s")


# --- language images ----------------------------------------------------------------------------


def descriptors() -> dict[str, dict]:
    """Every language folder's descriptor, by name; a folder with a language.json is a language."""
    found = {}
    for path in sorted(HERE.glob("*/language.json")):
        descriptor = json.loads(path.read_text())
        if descriptor.get("name") != path.parent.name:
            raise BuildError(f"{path}: name must be the folder's name {path.parent.name!r}")
        found[descriptor["name"]] = descriptor
    return found


def image_name(language: str) -> str:
    """`{prefix}{language}:{tag}`, as Settings names it (SANDBOX_PYTHON_IMAGE overrides python)."""
    if language == "python" and os.environ.get("SANDBOX_PYTHON_IMAGE"):
        return os.environ["SANDBOX_PYTHON_IMAGE"]
    prefix = os.environ.get("SANDBOX_IMAGE_PREFIX", "warmbox-sandbox-")
    return f"{prefix}{language}:{os.environ.get('SANDBOX_IMAGE_TAG', 'latest')}"


def build_order(languages: dict[str, dict], wanted: list[str]) -> list[str]:
    """The wanted languages and the ones they build on, parents first."""
    order: list[str] = []

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name not in languages:
            raise BuildError(f"unknown language {name!r} (known: {', '.join(sorted(languages))})")
        if name in chain:
            raise BuildError(f"languages build on each other in a circle: {chain}")
        parent = languages[name].get("from")
        if parent:
            visit(parent, (*chain, name))
        if name not in order:
            order.append(name)

    for name in wanted:
        visit(name, ())
    return order


def source_hash(name: str, languages: dict[str, dict], base_id: str) -> str:
    """The hash of everything the image is built from: base, agent, Dockerfile, its folder and
    (for one built on another language) that language's hash."""
    parent = languages[name].get("from")
    extra = f"base={base_id};parent={source_hash(parent, languages, base_id) if parent else ''}"
    dirs = [HERE / "agent", HERE / name]
    return hash_tree(dirs, HERE, extra=extra + (HERE / "Dockerfile").read_text())


def sources_hash(name: str, languages: dict[str, dict] | None = None) -> str:
    """The hash of the sources the agent and the runner run from: the agent, the Dockerfile, the
    language's folder and the folders it is built on (not the base: its packages are not ours).
    Baked into the image (/opt/warmbox/source-hash) and reported by the agent at hello; the pool
    refuses an image whose hash is not its own checkout's (an image built from older sources
    that speaks the same protocol VERSION)."""
    languages = languages if languages is not None else descriptors()
    folders = []
    while name:
        folders.append(HERE / name)
        name = languages[name].get("from", "")
    return hash_tree([HERE / "agent", *folders], HERE, extra=(HERE / "Dockerfile").read_text())


def build_language(
    name: str, descriptor: dict, from_image: str, digest: str, *, no_cache: bool = False
) -> None:
    needed = [
        f"agent/{name}.py"
        for name in (
            "agent",
            "cases",
            "cleanup",
            "execution",
            "protocol",
            "session",
            "session_files",
            "workspace",
            "zygote",
        )
    ]
    missing = [path for path in needed if not (HERE / path).is_file()]
    if missing:
        raise BuildError(f"missing sandbox sources: {', '.join(missing)}")
    packages = " ".join(descriptor.get("packages", []))
    command = [
        "build",
        "--quiet",
        *(["--no-cache"] if no_cache else []),
        # Packages come from the Debian mirror; the engine runs with --bridge=none, so only the
        # host's network reaches it. A layer without packages needs no network at all.
        "--network",
        "host" if packages else "none",
        "-f",
        str(HERE / "Dockerfile"),
        "--build-arg",
        f"BASE_IMAGE={from_image}",
        "--build-arg",
        f"LANGUAGE={name}",
        "--build-arg",
        f"PACKAGES={packages}",
        "--build-arg",
        f"SOURCES_HASH={sources_hash(name)}",
        "--label",
        f"{SOURCE_HASH_LABEL}={digest}",
        "-t",
        image_name(name),
        str(HERE),
    ]
    # The legacy builder is what Debian's engine has; BuildKit would need the buildx plugin.
    env = {**os.environ, "DOCKER_BUILDKIT": os.environ.get("DOCKER_BUILDKIT", "0")}
    result = subprocess.run(
        ["docker", *command], capture_output=True, text=True, check=False, env=env
    )
    if result.returncode != 0:
        raise BuildError(
            f"docker build of {name} failed:\n{(result.stdout + result.stderr)[-3000:]}"
        )


def ensure_language(
    name: str, languages: dict[str, dict], base: str, *, force: bool, no_cache: bool = False
) -> bool:
    """Build one language's image unless its label says it is up to date; True when built."""
    base_id = hash_tree([BASE_DIR], HERE) if base == BASE_IMAGE else base
    digest = source_hash(name, languages, base_id)
    target = image_name(name)
    current = image_info(target)
    if not force and current and current[1].get(SOURCE_HASH_LABEL) == digest:
        say(f"{target} is up to date ({digest[:12]})")
        return False
    parent = languages[name].get("from")
    started = time.monotonic()
    from_image = image_name(parent) if parent else base
    build_language(name, languages[name], from_image, digest, no_cache=no_cache)
    remove_replaced(current[0] if current else None, target)
    say(f"{target} built in {time.monotonic() - started:.0f}s ({digest[:12]})")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox_images.build", description=__doc__)
    parser.add_argument(
        "--base-image",
        default=os.environ.get("SANDBOX_BASE_IMAGE", ""),
        help="build FROM this image instead of the debootstrapped base (env SANDBOX_BASE_IMAGE)",
    )
    parser.add_argument(
        "--mirror",
        default=os.environ.get("SANDBOX_DEBIAN_MIRROR", ""),
        help="Debian mirror for debootstrap (default: from this machine's apt sources)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    parser.add_argument(
        "--no-cache", action="store_true", help="with --force: no Docker layer cache either"
    )
    parser.add_argument(
        "--language",
        action="append",
        default=[],
        help="build only this language (and what it builds on); repeatable; default: all",
    )
    args = parser.parse_args(argv)
    base_image = args.base_image or BASE_IMAGE
    started = time.monotonic()
    try:
        languages = descriptors()
        order = build_order(languages, args.language or sorted(languages))
        if base_image == BASE_IMAGE:
            ensure_base(args.mirror or None, force=args.force)
        for name in order:
            ensure_language(name, languages, base_image, force=args.force, no_cache=args.no_cache)
    except (BuildError, subprocess.CalledProcessError, OSError, ValueError) as exc:
        print(f"images: {exc}", file=sys.stderr)
        return 1
    say(f"{len(order)} image(s) ready in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The registry of languages: what each one is, which image runs it and how much memory it needs.

Each language is a folder in sandbox_images/ (packages, runner, descriptor `language.json`) plus
one name in REGISTERED below; everything else here is read from the descriptor, so adding a tenth
touches neither the pool nor the budget. Image names are `{SANDBOX_IMAGE_PREFIX}{name}:{tag}`.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from app.core.config import Settings
from app.core.errors import UnsupportedLanguageError
from sandbox_images import build

IMAGES_DIR = Path(__file__).resolve().parents[2] / "sandbox_images"
IMAGE_BUILD_COMMAND = "scripts/build-images.sh"

# One entry per language: its folder's name.
REGISTERED = ("python", "javascript", "typescript", "bash", "c", "cpp", "java", "go", "rust")


@dataclass(frozen=True)
class Language:
    name: str
    display_name: str
    version: str
    file_name: str
    compiled: bool
    memory_mb: int
    warm: str  # how the runtime is kept warm, for the README and the languages endpoint
    folder: str = ""  # the sandbox_images/ folder (and image) it runs in; empty means `name`

    def image(self, settings: Settings) -> str:
        folder = self.folder or self.name
        if folder == "python" and settings.sandbox_python_image:
            return settings.sandbox_python_image  # the older single-image setting still wins
        return f"{settings.sandbox_image_prefix}{folder}:{settings.sandbox_image_tag}"

    @classmethod
    def from_descriptor(cls, path: Path) -> Language:
        descriptor = json.loads(path.read_text())
        return cls(
            name=descriptor["name"],
            display_name=descriptor["display_name"],
            version=str(descriptor["version"]),
            file_name=descriptor["file"],
            compiled=bool(descriptor["compiled"]),
            memory_mb=int(descriptor["memory_mb"]),
            warm=descriptor.get("warm", ""),
        )


LANGUAGES: dict[str, Language] = {
    name: Language.from_descriptor(IMAGES_DIR / name / "language.json") for name in REGISTERED
}


@functools.cache
def sources_hash(folder: str) -> str:
    """The hash of this checkout's sources for the image of `folder` (what its agent must report
    at hello), or "" for a folder this checkout does not have."""
    if not (IMAGES_DIR / folder / "language.json").is_file():
        return ""
    return build.sources_hash(folder)


def get_language(name: str, installed: set[str] | None = None) -> Language:
    """The language called `name`, or UnsupportedLanguageError listing the ones that can run."""
    available = installed if installed is not None else set(LANGUAGES)
    language = LANGUAGES.get(name)
    if language is None or name not in available:
        raise UnsupportedLanguageError(
            f"language {name!r} is not supported",
            details={"supported": sorted(available)},
        )
    return language

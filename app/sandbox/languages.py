"""The registry of languages: which image runs each one and how its source file is named.

Adding a language means a folder in sandbox_images/ (image + language.json for the agent) and one
entry here. Only Python ships today.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.core.config import Settings
from app.core.errors import UnsupportedLanguageError


@dataclass(frozen=True)
class Language:
    name: str
    display_name: str
    file_name: str
    image_setting: str  # the Settings field that names this language's image

    def image(self, settings: Settings) -> str:
        return str(getattr(settings, self.image_setting))


LANGUAGES: dict[str, Language] = {
    "python": Language(
        name="python",
        display_name="Python 3",
        file_name="main.py",
        image_setting="sandbox_python_image",
    ),
}

IMAGE_BUILD_COMMAND = "scripts/build-images.sh"


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

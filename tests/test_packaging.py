"""What a release carries: version, licence, type marker, and the files the README and tests use.

These run from a clone and from an unpacked sdist alike (`pytest` inside the sdist is how the
MANIFEST.in is checked): a file the sdist leaves out fails here.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import sketchshot

ROOT = Path(__file__).resolve().parents[1]


def test_installed_metadata_matches_the_package() -> None:
    # A mismatch means the environment holds a stale install: `pip install -e .` again.
    assert metadata.version("sketchshot") == sketchshot.__version__


def test_licence_is_mit_and_ships_with_the_distribution() -> None:
    meta = metadata.metadata("sketchshot")
    assert meta["License-Expression"] == "MIT"
    assert meta.get_all("License-File") == ["LICENSE"]
    text = metadata.distribution("sketchshot").read_text("licenses/LICENSE")
    assert text is not None and text.startswith("MIT License")
    assert (ROOT / "LICENSE").read_text(encoding="utf-8") == text


def test_package_is_marked_typed() -> None:
    assert (Path(sketchshot.__file__).parent / "py.typed").is_file()


def test_files_the_readme_points_to_are_present() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    local = re.findall(r"\]\(((?:docs|examples|benchmarks)/[^)#\s]+)\)", readme)
    assert "docs/episode-grid.png" in local
    for name in [*local, "LICENSE", "CHANGELOG.md", "examples/omniglot.toml"]:
        assert (ROOT / name).is_file(), f"{name} is missing (MANIFEST.in?)"

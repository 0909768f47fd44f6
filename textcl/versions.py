"""The versions of textcl and of the libraries its numbers depend on, for ``textcl --version`` and for
every JSON report (a result is reproducible only with the versions that produced it)."""
from __future__ import annotations

import platform
from importlib import metadata

# key in the report -> distributions that provide it, first installed wins
LIBRARIES = {
    "torch": ("torch",),
    "transformers": ("transformers",),
    "sentence-transformers": ("sentence-transformers",),
    "faiss": ("faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "faiss-gpu-cu11", "faiss"),
}


def distribution_version(*names: str) -> str | None:
    """The installed version of the first of ``names`` that is installed (read from its metadata, without
    importing it), or None when none is."""
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def environment() -> dict[str, str | None]:
    """``{"textcl", "python", "torch", "transformers", "sentence-transformers", "faiss"}`` -> version string,
    None for a library that is not installed. textcl's own is the running code's ``textcl.__version__``."""
    from textcl import __version__

    versions: dict[str, str | None] = {"textcl": __version__, "python": platform.python_version()}
    versions.update({key: distribution_version(*dists) for key, dists in LIBRARIES.items()})
    return versions


def format_versions(versions: dict[str, str | None] | None = None) -> str:
    """``textcl 0.1.0`` then one ``name version`` line per library (``not installed`` for None)."""
    versions = environment() if versions is None else versions
    lines = [f"textcl {versions['textcl']}"]
    lines += [f"  {k:<22}{v if v is not None else 'not installed'}" for k, v in versions.items() if k != "textcl"]
    return "\n".join(lines)

"""Static files for prepaid data: content-hashed names, cached for good, gzip and brotli copies.

At start-up the app copies `app/static` and the few Bootstrap files the pages use into a
build folder under the instance folder, each file under a name that carries a hash of its
content (`css/app.1f2e3d4c5b6a.css`), next to its gzip and brotli copies. WhiteNoise serves
that folder: hashed names are cached by browsers for a year without revalidation (a changed
file gets a new name), and each client gets the smallest copy its Accept-Encoding allows.

The build folder is named by a digest of every source, so a restart with unchanged files
reuses it and concurrent processes (gunicorn workers) never build into one another's folder:
each builds into a private temporary folder and renames it into place.

Templates keep writing `url_for('static', filename='css/app.css')`: a URL default turns
the name into its hashed one. Nothing has to run before the app starts and no build
output is committed.
"""
from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shutil
import tempfile
from pathlib import Path

from whitenoise import WhiteNoise
from whitenoise.compress import Compressor

# Part of the digest: changing how files are built must not reuse an older build.
BUILD_FORMAT = "2"
MANIFEST = "manifest.json"  # beside the served folder, not in it
PUBLIC = "public"
KEEP_BUILDS = 3
HASH_LENGTH = 12
HASHED_NAME = re.compile(r"\.[0-9a-f]{%d}\.[A-Za-z0-9]+$" % HASH_LENGTH)
# Files other than the hashed ones (stale links to plain names) may change at any deploy.
PLAIN_MAX_AGE = 60

# The Bootstrap files the pages load, from the Bootstrap-Flask package (no CDN: the CSP
# allows only this origin). Customer pages need its CSS only; the operator console's
# dropdown also needs its JavaScript and Popper.
BOOTSTRAP_FILES = {
    "vendor/bootstrap/bootstrap.min.css": "bootstrap5/css/bootstrap.min.css",
    "vendor/bootstrap/bootstrap.min.js": "bootstrap5/js/bootstrap.min.js",
    "vendor/bootstrap/popper.min.js": "bootstrap5/umd/popper.min.js",
}

CSS_URL = re.compile(r"""url\(\s*(['"]?)([^'")]+)\1\s*\)""")
SOURCE_MAP = re.compile(rb"\n?/[/*]# sourceMappingURL=[^\n]*")


class StaticBuildError(RuntimeError):
    """A static file cannot be built (e.g. a stylesheet points at a file that does not exist)."""


def sources(static_folder: str | os.PathLike) -> dict[str, Path]:
    """Every file to serve, by the name templates use for it."""
    import flask_bootstrap

    static = Path(static_folder)
    found = {path.relative_to(static).as_posix(): path
             for path in sorted(static.rglob("*")) if path.is_file() and not path.name.startswith(".")}
    bootstrap = Path(flask_bootstrap.__file__).parent / "static"
    found.update({name: bootstrap / relative for name, relative in BOOTSTRAP_FILES.items()})
    return found


def digest(files: dict[str, Path]) -> str:
    """One hash over every name and content: the build folder's name."""
    hasher = hashlib.sha256(BUILD_FORMAT.encode())
    for name in sorted(files):
        hasher.update(name.encode() + b"\0" + files[name].read_bytes() + b"\0")
    return hasher.hexdigest()[:16]


def hashed_name(name: str, content: bytes) -> str:
    stem, dot, extension = name.rpartition(".")
    tag = hashlib.sha256(content).hexdigest()[:HASH_LENGTH]
    return f"{stem}.{tag}.{extension}" if dot and "/" not in extension else f"{name}.{tag}"


def rewrite_css(text: str, name: str, manifest: dict[str, str]) -> str:
    """Point a stylesheet's relative url(...) references at the hashed names."""
    base = posixpath.dirname(name)

    def swap(match: re.Match) -> str:
        quote, target = match.groups()
        if ":" in target or target.startswith(("/", "#")):
            return match.group(0)  # data: URIs, absolute URLs and fragments stay as they are
        path, suffix = re.match(r"([^?#]*)(.*)", target).groups()  # keep ?query and #fragment
        resolved = posixpath.normpath(posixpath.join(base, path))
        if resolved not in manifest:
            raise StaticBuildError(f"{name} refers to {target!r}, which is not a static file")
        return f"url({quote}{posixpath.relpath(manifest[resolved], base or '.')}{suffix}{quote})"
    return CSS_URL.sub(swap, text)


def build(files: dict[str, Path], out: Path) -> dict[str, str]:
    """Write every file under its hashed name into out/public, with compressed copies, and
    the manifest (name -> hashed name) beside it; return the manifest."""
    manifest: dict[str, str] = {}
    compressor = Compressor(quiet=True)
    # Stylesheets last, so the files they point at already have their hashed names.
    for name in sorted(files, key=lambda n: (n.endswith(".css"), n)):
        content = SOURCE_MAP.sub(b"", files[name].read_bytes())  # the maps themselves are not served
        if name.endswith(".css"):
            content = rewrite_css(content.decode("utf-8"), name, manifest).encode("utf-8")
        manifest[name] = hashed_name(name, content)
        target = out / PUBLIC / manifest[name]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        if compressor.should_compress(target.name):
            compressor.compress(str(target))
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def ensure_build(root: Path, files: dict[str, Path]) -> tuple[Path, dict[str, str]]:
    """The build folder for these exact files, built now unless an earlier start did it."""
    final = root / digest(files)
    if not (final / MANIFEST).exists():
        root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
        try:
            build(files, scratch)
            try:
                scratch.rename(final)
            except OSError:
                if not (final / MANIFEST).exists():  # not a concurrent build that won the race
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        _forget_old_builds(root, keep=final)
    return final, json.loads((final / MANIFEST).read_text())


def _forget_old_builds(root: Path, keep: Path) -> None:
    builds = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in [b for b in builds if b != keep][KEEP_BUILDS - 1:]:
        shutil.rmtree(old, ignore_errors=True)


def _is_hashed(path: str, url: str) -> bool:
    return bool(HASHED_NAME.search(url))


def _add_headers(headers, path: str, url: str) -> None:
    headers["X-Content-Type-Options"] = "nosniff"


def register_static(app) -> None:
    """Serve the hashed, compressed static files and make url_for('static') name them."""
    folder, manifest = ensure_build(Path(app.instance_path) / "static-build", sources(app.static_folder))
    app.wsgi_app = WhiteNoise(app.wsgi_app, root=str(folder / PUBLIC), prefix=app.static_url_path,
                              max_age=PLAIN_MAX_AGE, immutable_file_test=_is_hashed,
                              add_headers_function=_add_headers)
    app.extensions["static_manifest"] = manifest

    @app.url_defaults
    def _hashed_static_name(endpoint, values):
        if endpoint == "static" and values.get("filename") in manifest:
            values["filename"] = manifest[values["filename"]]

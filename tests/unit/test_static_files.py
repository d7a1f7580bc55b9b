"""Static files: hashed names in the pages, cached for good, compressed, built once per content."""
from __future__ import annotations

import gzip
import re
from pathlib import Path

import brotli
import pytest
from flask import url_for

from app import assets

HASHED = re.compile(r"/static/(?P<name>[\w/.-]+)\.[0-9a-f]{12}\.(?P<ext>css|js|svg)$")


def linked_assets(html: str) -> list[str]:
    return re.findall(r'(?:href|src)="(/static/[^"]+)"', html)


def test_pages_link_hashed_names_and_no_bootstrap_script(client):
    links = linked_assets(client.get("/login").text)
    names = {HASHED.fullmatch(link).group("name") for link in links}
    assert {"vendor/bootstrap/bootstrap.min", "css/app", "js/app", "favicon"} <= names, links
    # Customer pages do without Bootstrap's JavaScript and Popper: app.js opens the menu.
    assert not names & {"vendor/bootstrap/bootstrap.min.js", "vendor/bootstrap/popper.min"}
    assert not any(link.endswith("/bootstrap.min.js") or "popper" in link for link in links)


def test_the_console_does_without_bootstrap_script_too(as_admin):
    # Its menu is app.js's, like the customer pages'; it has no dropdown left to need Popper.
    links = linked_assets(as_admin.get("/admin/").text)
    assert any(re.search(r"/js/admin\.[0-9a-f]{12}\.js$", link) for link in links), links
    assert not any(link.endswith(".js") and ("bootstrap" in link or "popper" in link) for link in links), links


def test_url_for_names_the_hashed_file(app):
    with app.test_request_context():
        assert HASHED.fullmatch(url_for("static", filename="css/app.css"))
        assert url_for("static", filename="no/such.css") == "/static/no/such.css"


@pytest.mark.parametrize("encoding, decode", [("br", brotli.decompress), ("gzip", gzip.decompress),
                                              ("identity", lambda body: body)])
def test_hashed_files_are_cached_for_good_and_compressed(app, client, encoding, decode):
    with app.test_request_context():
        url = url_for("static", filename="vendor/bootstrap/bootstrap.min.css")
    response = client.get(url, headers={"Accept-Encoding": encoding})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "max-age=315360000, public, immutable"
    assert response.headers["Vary"] == "Accept-Encoding"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers.get("Content-Encoding") == (None if encoding == "identity" else encoding)
    body = decode(response.data)
    assert body.startswith(b'@charset "UTF-8";') and b"sourceMappingURL" not in body
    if encoding != "identity":
        assert len(response.data) < len(body) / 4


def test_plain_names_are_not_cached_for_good(client):
    response = client.get("/static/css/app.css")
    assert response.status_code == 200 and "immutable" not in response.headers.get("Cache-Control", "")


def test_the_manifest_is_not_served(client):
    assert client.get("/static/manifest.json").status_code == 404


# ------------------------------------------------------------------ the build


def write(folder: Path, files: dict[str, str]) -> dict[str, Path]:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return {name: folder / name for name in files}


def test_stylesheets_point_at_the_hashed_names(tmp_path):
    files = write(tmp_path / "src", {
        "img/logo.svg": "<svg/>",
        "css/site.css": 'a{background:url("../img/logo.svg#x")} b{background:url(data:image/png;base64,AA==)}\n'
                        "/*# sourceMappingURL=site.css.map */",
    })
    manifest = assets.build(files, tmp_path / "out")
    logo = manifest["img/logo.svg"]
    css = (tmp_path / "out" / assets.PUBLIC / manifest["css/site.css"]).read_text()
    assert f'url("../{logo}#x")' in css and "url(data:image/png;base64,AA==)" in css
    assert "sourceMappingURL" not in css


def test_a_stylesheet_pointing_at_a_missing_file_stops_the_build(tmp_path):
    files = write(tmp_path / "src", {"css/site.css": "a{background:url(missing.png)}"})
    with pytest.raises(assets.StaticBuildError, match="missing.png"):
        assets.build(files, tmp_path / "out")


def test_a_build_is_reused_until_a_file_changes(tmp_path, monkeypatch):
    files = write(tmp_path / "src", {"js/a.js": "one()"})
    first, manifest = assets.ensure_build(tmp_path / "builds", files)
    monkeypatch.setattr(assets, "build", lambda *a: pytest.fail("rebuilt unchanged files"))
    assert assets.ensure_build(tmp_path / "builds", files) == (first, manifest)

    monkeypatch.undo()
    write(tmp_path / "src", {"js/a.js": "two()"})
    second, changed = assets.ensure_build(tmp_path / "builds", files)
    assert second != first and changed["js/a.js"] != manifest["js/a.js"]


def test_old_builds_are_forgotten(tmp_path):
    folders = []
    for version in range(assets.KEEP_BUILDS + 2):
        files = write(tmp_path / "src", {"js/a.js": f"v{version}()"})
        folders.append(assets.ensure_build(tmp_path / "builds", files)[0])
    kept = sorted(p for p in (tmp_path / "builds").iterdir())
    assert folders[-1] in kept and len(kept) == assets.KEEP_BUILDS


def test_a_build_that_loses_the_race_to_another_process_is_discarded(tmp_path, monkeypatch):
    files = write(tmp_path / "src", {"js/a.js": "race()"})
    real_build = assets.build
    final = tmp_path / "builds" / assets.digest(files)

    def build_while_another_process_finishes_first(files, out):
        real_build(files, final)  # the other gunicorn worker renames its build into place first
        return real_build(files, out)
    monkeypatch.setattr(assets, "build", build_while_another_process_finishes_first)
    folder, manifest = assets.ensure_build(tmp_path / "builds", files)
    assert folder == final and (folder / assets.PUBLIC / manifest["js/a.js"]).read_text() == "race()"
    assert [p.name for p in (tmp_path / "builds").iterdir()] == [final.name]  # no scratch folder left

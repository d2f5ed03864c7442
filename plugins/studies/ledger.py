"""A study's ledger: finished points kept outside the run folder, so a ladder can go on elsewhere.

A ladder on a CPU can take more hours than one machine keeps its run folder. With ``ledger: DIR``
each finished point is also written to ``DIR/<run_name>/<study id>/<point>-<fingerprint>.json``
(a few hundred bytes: score, metrics, where and when). A folder under version control carries
them to the next machine, where a study with the same settings adopts them instead of training.

The key is a *portable* fingerprint: the point's settings with the starting stage's config
fingerprint in place of its output id (a fresh id each time that stage runs). Settings alone do
not prove the rerun starting model is the same, so the starting model is always scored here and
its metrics must equal the ledger's to the last digit before any point is adopted.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import socket
from pathlib import Path
from typing import Any, Sequence

from reasonrl.core.errors import ReasonRLError
from reasonrl.core.io import atomic_write_json, read_json
from reasonrl.core.pipeline import stage_fingerprint, stage_inputs

# Result-neutral settings added after ledgers were first written (``compile``: how decoding runs,
# exact against the eager loop). A point recorded before one existed is also looked up without it,
# so a new option at its default does not orphan every ledger written before it.
ADDED_NEUTRAL_DEFAULTS: dict[str, Any] = {"compile": "auto"}


def without_added_defaults(value: Any) -> Any:
    """A params dump without the keys of ADDED_NEUTRAL_DEFAULTS where they hold that default."""
    if isinstance(value, dict):
        return {k: without_added_defaults(v) for k, v in value.items()
                if not (k in ADDED_NEUTRAL_DEFAULTS and v == ADDED_NEUTRAL_DEFAULTS[k])}
    if isinstance(value, list):
        return [without_added_defaults(v) for v in value]
    return value


def earlier_start_fingerprint(config, stage_id: str) -> str:
    """The starting stage's portable fingerprint as a ledger written before the settings of
    ADDED_NEUTRAL_DEFAULTS existed holds it."""
    stage = next(s for s in config.stages if s.id == stage_id)
    params = without_added_defaults(stage.params.model_dump(mode="json"))
    return stage_fingerprint(config, stage, stage_inputs(config)[stage_id], params=params)


class LedgerMismatchError(ReasonRLError):
    def __init__(self, path: Path, here: dict[str, Any], there: dict[str, Any]) -> None:
        differ = sorted(k for k in set(here) | set(there) if here.get(k) != there.get(k))
        super().__init__(
            f"the starting model scores differently here than in the ledger entry {path} (metrics {differ[:4]} "
            f"differ, e.g. {differ[0]}: {here.get(differ[0])} here, {there.get(differ[0])} there): the earlier "
            f"stage that made it did not reproduce, so the ledger's points come from another model and none was "
            f"adopted. Move the ledger folder away (or set ledger: null) to train every point here; the scores "
            f"computed so far are kept in the run folder.")


def entry_path(ledger: str | Path, run_name: str, stage_id: str, point: str, fingerprint: str,
               earlier: Sequence[str] = ()) -> Path:
    """The entry of this point: found by its fingerprint (or one of the ``earlier`` ones it had under
    older code) anywhere in the ledger, else its place under ``<run_name>/<stage_id>/``. The
    fingerprint decides the point, so a renamed run or study finds it, and so does another ladder's
    rung that is the same run (G = 4 rollouts for 16 steps is the 16-step rung of a steps ladder
    with G = 4)."""
    for key in (fingerprint, *earlier):
        found = sorted(Path(ledger).glob(f"**/*-{key[:16]}.json"))
        if found:
            return found[0]
    return Path(ledger) / run_name / stage_id / f"{point}-{fingerprint[:16]}.json"


def read_entry(path: Path) -> dict[str, Any] | None:
    return read_json(path) if path.exists() else None


def write_entry(path: Path, point: str, fingerprint: str, stored: dict[str, Any]) -> None:
    """Record a finished point (``stored`` is its point.json) unless the ledger has it already."""
    if path.exists():
        return
    atomic_write_json(path, {
        "point": point, "fingerprint": fingerprint, "score": stored["score"], "metrics": stored["metrics"],
        "seconds": stored.get("seconds"),  # train + score here, for planning the sittings a ladder needs
        "host": socket.gethostname(), "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"), "versions": package_versions()})


def package_versions() -> dict[str, str | None]:
    """What made the point: code changes that alter results without changing a setting show here."""
    versions = {}
    for name in ("reasonrl", "torch", "transformers"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def check_start(path: Path, metrics: dict[str, Any]) -> bool:
    """True when the ledger holds this starting model's score and ``metrics`` equal it; False when it
    holds none (nothing can be adopted yet); LedgerMismatchError when they differ."""
    entry = read_entry(path)
    if entry is None:
        return False
    if entry["metrics"] != metrics:
        raise LedgerMismatchError(path, metrics, entry["metrics"])
    return True

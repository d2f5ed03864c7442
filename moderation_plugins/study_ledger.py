"""How ``moderation_study`` keeps its points in a ledger outside the run folder and adopts them."""

from __future__ import annotations

from pathlib import Path
from reasonrl.core.contracts import StageContext
from reasonrl.core.errors import ReasonRLError
from reasonrl.core.io import atomic_write_json, read_json
from reasonrl.core.config import load_config
from reasonrl.plugins.studies.ledger import (check_start, earlier_start_fingerprint, entry_path, read_entry,
                                             write_entry)


WAIT = object()  # a point that needs another worker's point first


class StalePointError(ReasonRLError):
    def __init__(self, stage_id: str, name: str, folder) -> None:
        super().__init__(
            f"stage {stage_id!r}: point {name!r} in {folder} was trained or scored under other settings than the "
            f"config's (its rl/sft params, seed, starting model or evaluation changed); reusing it would mix two "
            f"setups in one ladder. Move that folder away to redo the point, rerun with --force {stage_id} to "
            f"redo the whole study, or give the config a new run_name.")


class StudyLedger:
    """Mixin of ``ModerationStudy`` (reads its params, fingerprints and scores)."""

    def ledger_entry(self, context: StageContext, name: str, job: tuple[str, int, int] | None) -> tuple[Path, str]:
        """Where the ledger keeps this point, and its portable fingerprint."""
        portable = self.point_fingerprint(context, job, start_key="fingerprint")
        earlier = self.fingerprint(job, self.earlier_start(context), context.seed, earlier=True)
        return entry_path(self.params.ledger, context.run_dir.name, context.stage_id, name, portable,
                          [earlier]), portable

    def earlier_start(self, context: StageContext) -> str | None:
        """The starting stage's fingerprint as ledgers written by older code hold it."""
        model = self.params.model
        if model.source != "stage" or not model.stage:
            return None
        return earlier_start_fingerprint(load_config(context.run_dir / "config.resolved.yaml"), model.stage)

    def record_in_ledger(self, context: StageContext, name: str, job: tuple[str, int, int] | None) -> None:
        """Write a finished point to the ledger; for the starting model, first check that it scores as
        the ledger says (LedgerMismatchError when not)."""
        if self.params.ledger is None:
            return
        stored = read_json(context.stage_dir / name / "point.json")
        path, portable = self.ledger_entry(context, name, job)
        if job is None and check_start(path, stored["metrics"]):
            return
        write_entry(path, name, portable, stored)

    def adopt_from_ledger(self, context: StageContext, name: str, job: tuple[str, int, int] | None,
                          fingerprint: str) -> float | None | object:
        """The ledger's score of this point, stored as the point's own: None when the ledger lacks it
        (or cannot vouch for the starting model), WAIT while another worker scores the starting model."""
        if self.params.ledger is None or job is None:
            return None
        entry = read_entry(self.ledger_entry(context, name, job)[0])
        if entry is None:
            return None
        base = context.stage_dir / self.name(None) / "point.json"
        if not base.exists():
            return WAIT
        if not check_start(self.ledger_entry(context, self.name(None), None)[0], read_json(base)["metrics"]):
            return None
        origin = {"host": entry["host"], "recorded": entry["recorded"]}
        atomic_write_json(context.stage_dir / name / "point.json", {
            "score": entry["score"], "metrics": entry["metrics"], "fingerprint": fingerprint, "ledger": origin})
        return float(entry["metrics"][self.params.metric])

    def stored_score(self, context: StageContext, name: str, fingerprint: str) -> float:
        folder = context.stage_dir / name
        stored = read_json(folder / "point.json")
        if stored.get("fingerprint", fingerprint) != fingerprint:
            raise StalePointError(context.stage_id, name, folder)
        return float(stored["metrics"][self.params.metric])

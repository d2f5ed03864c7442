"""Bring your own data: any table ``datasets.load_dataset`` reads, as reasonrl examples.

Local CSV, JSON-lines or Parquet files (or a Hub dataset id where a hub is reachable),
renamed and templated into the fields stages read (``prompt``, ``completion``, ``text``,
``answer``...). The moderation and GR2 packs load user tables through :func:`load_table`.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

from pydantic import Field

from reasonrl.core.assets import cache_dir
from reasonrl.core.contracts import current_run_dir
from reasonrl.core.errors import ReasonRLError
from reasonrl.core.registry import Params

BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


class TableParams(Params):
    """Where a table comes from; shared by ``hf_dataset`` and the packs' own-data loaders."""

    data_files: str | list[str] | dict[str, str | list[str]] | None = Field(
        None, description="local file(s), or split -> file(s); relative paths resolve against the working "
                          "folder, then the run folder (an earlier stage's output)")
    path: str | None = Field(
        None, description="a Hub dataset id, or a builder ('csv', 'json', 'parquet'); "
                          "default: the builder of data_files' extension")
    name: str | None = Field(None, description="the dataset's configuration name (Hub datasets)")
    revision: str | None = Field(None, description="a Hub revision (branch, tag or commit) to pin")
    splits: dict[str, str] = Field(
        default_factory=dict, description="reasonrl split -> the dataset's split, slicing allowed, e.g. "
                                          "{train: 'train[:90%]', validation: 'train[90%:]'}; "
                                          "default: the dataset's own splits")
    load_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="more load_dataset keyword arguments, e.g. {delimiter: '\\t'}")


class HFDatasetParams(TableParams):
    """A table as examples: columns renamed, fields built from templates."""

    columns: dict[str, str] = Field(
        default_factory=dict, description="the dataset's column -> the field stages read, e.g. "
                                          "{question: prompt, answer: completion}")
    templates: dict[str, str] = Field(
        default_factory=dict, description="field -> a format string over the row's (renamed) fields, e.g. "
                                          "{prompt: 'Q: {question}\\nA:'}")
    limit: int | None = Field(None, gt=0, description="keep the first N examples of each split")


def resolve_data_file(name: str) -> str:
    """A relative path as given if it exists under the working folder, else under the run folder."""
    path = Path(name).expanduser()
    if path.is_absolute() or path.exists() or "://" in name:
        return str(path) if "://" not in name else name
    run_dir = current_run_dir()
    if run_dir is not None and (run_dir / path).exists():
        return str(run_dir / path)
    where = f"{Path.cwd()}" + (f" or the run folder {run_dir}" if run_dir is not None else "")
    raise ReasonRLError(f"data file {name!r} does not exist under {where}; fix data_files")


def _resolve_files(files):
    if files is None:
        return None
    if isinstance(files, str):
        return resolve_data_file(files)
    if isinstance(files, list):
        return [resolve_data_file(f) for f in files]
    return {split: _resolve_files(f) for split, f in files.items()}


def _first_file(files) -> str | None:
    if isinstance(files, str):
        return files
    values = files if isinstance(files, list) else list((files or {}).values())
    return _first_file(values[0]) if values else None


def builder_for(params: TableParams) -> str:
    if params.path:
        return params.path
    first = _first_file(params.data_files)
    suffix = Path(first or "").suffix.lower()
    if suffix not in BUILDERS:
        raise ReasonRLError(f"cannot tell the format of data file {first!r}; name it in path: "
                            f"csv, json or parquet (extensions known: {', '.join(BUILDERS)})")
    return BUILDERS[suffix]


def load_table(params: TableParams, cells_as_text: bool = False) -> dict[str, list[dict[str, Any]]]:
    """Split -> rows, read by ``datasets.load_dataset`` (cached under reasonrl's cache).
    ``cells_as_text``: a CSV's columns are all read as strings, so a loader can check each row
    itself (ids such as ``u_17`` after thousands of numeric ones, a rating typed ``abc``) instead
    of failing inside pyarrow's type inference."""
    import datasets

    if cells_as_text:
        params = csv_as_text(params)
    if params.data_files is None and params.path is None:
        raise ReasonRLError("a table needs data_files (local files) or path (a Hub dataset id)")
    builder = builder_for(params)
    kwargs = dict(params.load_kwargs)
    if builder == "csv" and _first_file(params.data_files or "").endswith(".tsv"):
        kwargs.setdefault("delimiter", "\t")
    datasets.disable_progress_bars()
    try:
        loaded = datasets.load_dataset(builder, name=params.name, data_files=_resolve_files(params.data_files),
                                       revision=params.revision, cache_dir=str(cache_dir() / "hf_datasets"),
                                       **kwargs)
    except (FileNotFoundError, ValueError, datasets.exceptions.DatasetGenerationError) as exc:
        cause = exc.__cause__ or exc  # the generation error wraps what was wrong (a cell's type, the encoding)
        raise ReasonRLError(f"load_dataset({builder!r}, data_files={params.data_files!r}) failed: "
                            f"{type(cause).__name__}: {str(cause)[:500]}. Check the file's encoding (UTF-8) and that "
                            f"each column holds one type; load_kwargs passes options to the reader") from exc
    if not params.splits:
        return {split: loaded[split].to_list() for split in loaded}
    return {ours: _select_split(loaded, builder, theirs, params).to_list() for ours, theirs in params.splits.items()}


def csv_as_text(params: TableParams) -> TableParams:
    """``params`` with every column of its CSV typed as a string (other formats carry their types)."""
    import csv

    import datasets

    if builder_for(params) != "csv" or "features" in params.load_kwargs:
        return params
    first = resolve_data_file(_first_file(params.data_files))
    delimiter = params.load_kwargs.get("delimiter", params.load_kwargs.get("sep", "\t" if first.endswith(".tsv") else ","))
    with open(first, newline="", encoding=params.load_kwargs.get("encoding", "utf-8"), errors="replace") as handle:
        header = next(csv.reader(handle, delimiter=delimiter), [])
    features = datasets.Features({name: datasets.Value("string") for name in header})
    return params.model_copy(update={"load_kwargs": {**params.load_kwargs, "features": features}})


def _select_split(loaded, builder: str, spec: str, params: TableParams):
    """``train`` or a slice such as ``train[:90%]`` of the loaded dataset."""
    import datasets

    base = spec.split("[", 1)[0]
    if base not in loaded:
        raise ReasonRLError(f"splits maps to {spec!r}, but the dataset's splits are {sorted(loaded)}")
    if "[" not in spec:
        return loaded[base]
    instruction = datasets.ReadInstruction.from_spec(spec)
    absolute = instruction.to_absolute({base: loaded[base].num_rows})[0]
    start, stop = absolute.from_ or 0, absolute.to if absolute.to is not None else loaded[base].num_rows
    return loaded[base].select(range(start, stop))


def apply_columns(rows: list[dict], columns: dict[str, str], templates: dict[str, str], where: str) -> list[dict]:
    """Rename columns, then add templated fields; errors name the row and the missing field."""
    if rows:
        missing = [c for c in columns if c not in rows[0]]
        if missing:
            raise ReasonRLError(f"{where}: columns names {missing[0]!r}, which the table lacks; its columns are "
                                f"{sorted(rows[0])}")
    out = []
    for index, row in enumerate(rows):
        renamed = {columns.get(k, k): v for k, v in row.items()}
        for field, template in templates.items():
            try:
                renamed[field] = template.format(**renamed)
            except (KeyError, IndexError) as exc:
                names = [n for _, n, _, _ in string.Formatter().parse(template) if n]
                raise ReasonRLError(f"{where}: row {index}: template for {field!r} uses {names}, but the row has "
                                    f"no field {exc}; its fields are {sorted(renamed)}") from None
        out.append(renamed)
    return out


class HFDataset:
    """Examples from a table read by ``datasets``; the ``sft``, ``rl`` and ``lm`` stages take it."""

    def __init__(self, params: HFDatasetParams) -> None:
        self.params = params

    def splits(self) -> dict[str, list[dict]]:
        p = self.params
        out = {}
        for split, rows in load_table(p).items():
            out[split] = apply_columns(rows[: p.limit] if p.limit else rows, p.columns, p.templates,
                                       f"hf_dataset split {split!r}")
        return out

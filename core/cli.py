"""The ``reasonrl`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path

from reasonrl.core.assets import cache_dir, verify_cache
from reasonrl.core.config import load_config
from reasonrl.core.errors import ReasonRLError
from reasonrl.core.manager import DEFAULT_PLUGINS, get_registry
from reasonrl.core.pipeline import run_pipeline, shutdown_distributed
from reasonrl.core.registry import describe_params


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        return args.handler(args) or 0
    except BrokenPipeError:  # `reasonrl plugins --json | head`: the reader left, which is fine
        _silence_stdout()
        return 0
    except ReasonRLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished stages and checkpoints are kept, rerun to resume", file=sys.stderr)
        return 130


def _silence_stdout() -> None:
    """Point stdout at devnull so the interpreter's final flush does not raise again."""
    import os

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


CORE_COMMANDS = ("plugins", "run", "config", "demo", "cache")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    from reasonrl import __version__

    parser = argparse.ArgumentParser(prog="reasonrl", description=__doc__)
    parser.add_argument("--version", action="version", version=f"reasonrl {__version__}")
    sub = parser.add_subparsers()
    _plugin_commands(sub, command)

    plugins = sub.add_parser("plugins", help="list every registered component")
    plugins.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    plugins.add_argument("--kind", help="only this kind, e.g. reward_functions")
    plugins.add_argument("--params", metavar="NAME", help="every option of the component NAME: type, default, "
                         "description (--kind picks one when several kinds use the name)")
    plugins.set_defaults(handler=cmd_plugins)

    run = sub.add_parser("run", help="validate a config, then run its stages")
    _config_args(run)
    run.add_argument("--force", action="append", default=[], metavar="STAGE", help="rerun a finished stage")
    run.set_defaults(handler=cmd_run)

    config = sub.add_parser("config", help="config tools").add_subparsers()
    validate = config.add_parser("validate", help="validate a config without running it")
    _config_args(validate)
    validate.set_defaults(handler=cmd_validate)

    cache = sub.add_parser("cache", help="the cache of fetched data and model files").add_subparsers()
    verify = cache.add_parser("verify", help="check every cached file against the sha256 recorded at extraction")
    verify.add_argument("--repair", action="store_true", help="remove damaged assets; their next use fetches them again")
    verify.set_defaults(handler=cmd_cache_verify)

    demo = sub.add_parser("demo", help="run a built-in demo pipeline")
    demo.add_argument("name", help="demo name; `reasonrl demo --list` shows them", nargs="?")
    demo.add_argument("--list", action="store_true", help="list the demos")
    demo.add_argument("--out", default=None, help="output folder (default: runs)")
    demo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    demo.add_argument("--force", action="append", default=[], metavar="STAGE")
    demo.set_defaults(handler=cmd_demo)
    return parser


def _plugin_commands(sub, command: str | None) -> None:
    """Subcommands registered by plugins; only the one being run is built (imported)."""
    if command in CORE_COMMANDS:
        return

    registry = get_registry()
    for name in registry.names("commands"):
        info = registry.get("commands", name)
        parser = sub.add_parser(name, help=info.summary)
        if name == command:
            component = registry.build("commands", name)
            component.add_arguments(parser)
            parser.set_defaults(handler=component.run)


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a .yaml or .json run config")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a value, e.g. --set stages[1].steps=20 (repeatable)",
    )


def cmd_plugins(args: argparse.Namespace) -> int:
    registry = get_registry()
    if args.kind:
        registry.names(args.kind)  # an unknown kind is an error that lists the kinds, not an empty table
    if args.params:
        return print_params(registry, args.params, args.kind, args.json)
    conflicted = [c for claims in registry.conflicts.values() for c in claims]
    infos = [i for i in registry.all() + conflicted if args.kind in (None, i.kind)]
    rows = [
        {"kind": i.kind, "name": i.name, "plugin": i.plugin, "package": i.package, "where": i.where,
         "summary": ("CONFLICT: " if i in conflicted else "") + i.summary}
        for i in infos
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows, ["kind", "name", "plugin", "package", "summary"]))
    for plugin, error in registry.failed_plugins.items():
        print(f"warning: plugin {plugin!r} failed to load: {error}", file=sys.stderr)
    for kind, name in registry.conflicts:
        print(f"warning: {registry.conflict_message(kind, name)}", file=sys.stderr)
    return 0


def print_params(registry, name: str, kind: str | None, as_json: bool) -> int:
    infos = [i for i in registry.all() if i.name == name and kind in (None, i.kind)]
    if not infos:
        known = sorted({i.name for i in registry.all() if kind in (None, i.kind)})
        raise ReasonRLError(f"no component named {name!r}{f' of kind {kind}' if kind else ''}; known: "
                            f"{', '.join(known)}")
    described = [{"kind": i.kind, "name": i.name, "where": i.where, "summary": i.summary,
                  "params": describe_params(i.params_model())} for i in infos]
    if as_json:
        print(json.dumps(described, indent=2))
        return 0
    for entry in described:
        print(f"{entry['kind']} {entry['name']!r} ({entry['where']}): {entry['summary']}")
        if entry["params"]:
            rows = [{**row, "default": shorten(row["default"], 40)} for row in entry["params"]]
            print(format_table(rows, ["name", "type", "default", "description"]))
        else:
            print("(no params)")
        print()
    return 0


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def format_table(rows: list[dict], columns: list[str]) -> str:
    widths = {c: max([len(c)] + [len(str(r[c])) for r in rows]) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns).rstrip(), "  ".join("-" * widths[c] for c in columns)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in columns).rstrip() for r in rows]
    return "\n".join(lines)


def cmd_validate(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.set)
    stages = ", ".join(f"{s.id} ({s.name})" for s in config.stages)
    print(f"{args.config}: valid; run {config.run.run_name!r} -> {config.run_dir}; stages: {stages}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.set)
    run_pipeline(config, force=args.force)
    shutdown_distributed()
    print(f"run finished: {config.run_dir}")
    return 0


def cmd_cache_verify(args: argparse.Namespace) -> int:
    import shutil

    results = verify_cache(full=True)
    for folder, problems in results.items():
        print(f"{'ok' if not problems else 'DAMAGED'}  {folder}")
        for problem in problems:
            print(f"    {problem}")
        if problems and args.repair:
            shutil.rmtree(folder)
            print("    removed; its next use fetches it again")
    if not results:
        print(f"no cached assets in {cache_dir()}")
    damaged = sum(1 for problems in results.values() if problems)
    return 1 if damaged and not args.repair else 0


def demo_configs() -> dict[str, Path]:
    """Demo configs shipped as ``demos/<name>.yaml`` inside the built-in packs."""
    found = {}
    for module_name in DEFAULT_PLUGINS:
        folder = resources.files(module_name.rsplit(".", 1)[0]) / "demos"
        if folder.is_dir():
            for item in folder.iterdir():
                if item.name.endswith(".yaml"):
                    found[item.name[: -len(".yaml")]] = Path(str(item))
    return found


def cmd_demo(args: argparse.Namespace) -> int:
    demos = demo_configs()
    if args.list or not args.name:
        for name, path in sorted(demos.items()):
            print(f"{name}  ({path})")
        return 0
    if args.name not in demos:
        raise ReasonRLError(f"unknown demo {args.name!r}; demos: {', '.join(sorted(demos))}")
    overrides = list(args.set) + ([f"output_dir={args.out}"] if args.out else [])
    config = load_config(demos[args.name], overrides)
    outputs = run_pipeline(config, force=args.force)
    report = next((o["report_markdown"] for o in reversed(list(outputs.values())) if "report_markdown" in o), None)
    if report:
        print(report)
    else:
        for stage_id, summary in outputs.items():
            print(f"{stage_id}: {json.dumps(summary, default=str)}")
    print(f"demo finished: {config.run_dir}")
    return 0

"""mkdocs hook: the reference pages are generated at build time from the code itself
(hook specs, contracts, params models, argparse), so they cannot drift from it."""

from __future__ import annotations

import inspect

from mkdocs.structure.files import File


def on_files(files, config):
    for path, text in generated_pages().items():
        files.append(File.generated(config, path, content=text))
    return files


def generated_pages() -> dict[str, str]:
    return {"api/components.md": components_page(), "api/params.md": params_page(), "api/cli.md": cli_page()}


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def components_page() -> str:
    from reasonrl.core import contracts, hookspecs
    from reasonrl.core.manager import get_registry

    registry = get_registry()
    out = ["# Component kinds and their contracts", "",
           "Generated from `core/hookspecs.py` and `core/contracts.py`. " + _first_paragraph(hookspecs.__doc__), ""]
    for kind, contract_name in hookspecs.KINDS.items():
        hook = getattr(hookspecs, f"register_{kind}")
        contract = getattr(contracts, contract_name)
        out += [f"## `{kind}`", "", inspect.cleandoc(hook.__doc__ or ""), "",
                f"Contract `{contract_name}`:", "", "```python", inspect.getsource(contract).rstrip(), "```", "",
                "| built-in | summary | where |", "|---|---|---|"]
        out += [f"| `{i.name}` | {_cell(i.summary)} | `{i.where}` |" for i in registry.all()
                if i.kind == kind and i.package == "reasonrl"]
        out.append("")
    out += ["## Batch shapes", ""]
    for shape in (contracts.Rollouts, contracts.RolloutBatch):
        out += ["```python", inspect.getsource(shape).rstrip(), "```", ""]
    return "\n".join(out)


def _first_paragraph(text: str | None) -> str:
    return inspect.cleandoc(text or "").split("\n\n")[0].replace("\n", " ")


def params_page() -> str:
    from reasonrl.core.config import RunConfig
    from reasonrl.core.hookspecs import KINDS
    from reasonrl.core.manager import get_registry
    from reasonrl.core.registry import describe_params

    registry = get_registry()
    out = ["# Parameters", "",
           "Generated from each component's pydantic params model: the same table "
           "`reasonrl plugins --params NAME` prints. Nested options use dotted names; a default shown "
           "for a nested option is the value its parent gives it.", "", "## The run config", ""]
    out += _params_table(describe_params(RunConfig))
    for kind in KINDS:
        infos = [i for i in registry.all() if i.kind == kind and i.package == "reasonrl"]
        if not infos:
            continue
        out += [f"## {kind}", ""]
        for info in infos:
            out += [f"### {kind} / `{info.name}`", "", _cell(info.summary), ""]
            rows = describe_params(info.params_model())
            out += _params_table(rows) if rows else ["No params.", ""]
    return "\n".join(out)


def _params_table(rows: list[dict]) -> list[str]:
    lines = ["| option | type | default | description |", "|---|---|---|---|"]
    lines += [f"| `{r['name']}` | `{_cell(r['type'])}` | `{_cell(r['default'])}` | {_cell(r['description'])} |"
              for r in rows]
    return lines + [""]


def cli_page() -> str:
    from reasonrl.core.cli import build_parser
    from reasonrl.core.manager import get_registry

    commands = ["plugins", "run", "demo", "cache"] + registry_commands(get_registry())
    out = ["# Command line", "", "Generated from the argparse definitions: what `reasonrl COMMAND --help` prints.", "",
           "```text", build_parser().format_help().rstrip(), "```", ""]
    for command in commands:
        parser = build_parser(command)
        sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        out += [f"## `reasonrl {command}`", "", "```text", sub.choices[command].format_help().rstrip(), "```", ""]
    return "\n".join(out)


def registry_commands(registry) -> list[str]:
    return [name for name in registry.names("commands") if registry.get("commands", name).package == "reasonrl"]

"""mkdocs hook: the reference pages are generated at build time from the code itself
(hook specs, contracts, params models, argparse, the example configs), so they cannot drift
from it. Also fills ``{{ kinds_table }}`` in hand-written pages from the registry."""

from __future__ import annotations

import html
import inspect
import re
from pathlib import Path

import yaml
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]


def on_config(config):
    """The Parameters entry of the nav becomes one page per component kind."""
    from reasonrl.core.hookspecs import KINDS

    pages = [{"Overview and the run config": "api/params/index.md"}] + \
            [{kind: f"api/params/{kind}.md"} for kind in KINDS]
    _replace_nav(config["nav"], "api/params.md", pages)
    return config


def _replace_nav(nav, target: str, pages: list) -> bool:
    for index, entry in enumerate(nav):
        title, value = next(iter(entry.items())) if isinstance(entry, dict) else (None, entry)
        if value == target:
            nav[index] = {title: pages}
            return True
        if isinstance(value, list) and _replace_nav(value, target, pages):
            return True
    return False


def on_files(files, config):
    for path, text in generated_pages().items():
        files.append(File.generated(config, path, content=text))
    return files


def on_page_markdown(markdown, page, config, files):
    return markdown.replace("{{ kinds_table }}", kinds_table()) if "{{ kinds_table }}" in markdown else markdown


def generated_pages() -> dict[str, str]:
    from reasonrl.core.hookspecs import KINDS

    pages = {"api/components.md": components_page(), "api/params/index.md": params_index(),
             "api/cli.md": cli_page(), "examples.md": examples_page()}
    pages.update({f"api/params/{kind}.md": params_page(kind) for kind in KINDS})
    return pages


# ---------------------------------------------------------------- text helpers


def code(text) -> str:
    """Inline code that survives a Markdown table: HTML, with the pipe as an entity (a ``\\|``
    inside backticks would be shown literally)."""
    return "<code>" + html.escape(str(text), quote=False).replace("|", "&#124;") + "</code>"


def cell(text) -> str:
    return markdown_text(str(text)).replace("|", "&#124;").replace("\n", " ")


ROLE = re.compile(r":(?:class|func|meth|data|attr|mod|obj):`~?([^`]+)`")


def markdown_text(text: str) -> str:
    """Docstring reStructuredText roles and double backticks as Markdown code spans."""
    text = ROLE.sub(lambda m: f"`{m.group(1).split('.')[-1] if m.group(0).find('~') > 0 else m.group(1)}`", text)
    return re.sub(r"``([^`]+)``", r"`\1`", text)


def as_yaml(value) -> str:
    """A default as a config file would write it."""
    if isinstance(value, str) and value in ("required", "(below)"):
        return value
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _first_paragraph(text: str | None) -> str:
    return inspect.cleandoc(text or "").split("\n\n")[0].replace("\n", " ")


# ---------------------------------------------------------------- pages


def components_page() -> str:
    from reasonrl.core import contracts, hookspecs
    from reasonrl.core.manager import get_registry

    registry = get_registry()
    out = ["# Component kinds and their contracts", "",
           "Generated from `core/hookspecs.py` and `core/contracts.py`. " +
           markdown_text(_first_paragraph(hookspecs.__doc__)), ""]
    for kind, contract_name in hookspecs.KINDS.items():
        hook = getattr(hookspecs, f"register_{kind}")
        contract = getattr(contracts, contract_name)
        out += [f"## `{kind}`", "", markdown_text(inspect.cleandoc(hook.__doc__ or "")), "",
                f"Contract `{contract_name}`:", "", "```python", inspect.getsource(contract).rstrip(), "```", "",
                "| built-in | summary | where |", "|---|---|---|"]
        out += [f"| `{i.name}` | {cell(i.summary)} | {code(i.where)} |" for i in registry.all()
                if i.kind == kind and i.package == "reasonrl"]
        out.append("")
    out += ["## Batch shapes", ""]
    for shape in (contracts.Rollouts, contracts.RolloutBatch):
        out += ["```python", inspect.getsource(shape).rstrip(), "```", ""]
    return "\n".join(out)


def kinds_table() -> str:
    """kind | contract | its methods and attributes, from the contracts themselves."""
    from reasonrl.core import contracts, hookspecs

    rows = ["| kind | contract | what a stage calls |", "|---|---|---|"]
    for kind, name in hookspecs.KINDS.items():
        rows.append(f"| `{kind}` | `{name}` | {', '.join(code(m) for m in contract_members(getattr(contracts, name)))} |")
    return "\n".join(rows)


def contract_members(contract) -> list[str]:
    """``name(args)`` per method and ``name`` per attribute a Protocol declares."""
    members = []
    for name, value in vars(contract).items():
        if name.startswith("_"):
            continue
        if callable(value):
            parameters = list(inspect.signature(value).parameters)[1:]
            members.append(f"{name}({', '.join(parameters)})")
    members += [name for name in getattr(contract, "__annotations__", {}) if not name.startswith("_")]
    return members


def params_index() -> str:
    from reasonrl.core.config import RunConfig
    from reasonrl.core.hookspecs import KINDS
    from reasonrl.core.registry import describe_params

    out = ["# Parameters", "",
           "Generated from each component's pydantic params model: the same options "
           "`reasonrl plugins --params NAME` prints. Nested options use dotted names; a default shown "
           "for a nested option is the value its parent gives it. Defaults are written as in a config file.", "",
           "Components, one page per kind: " + ", ".join(f"[{kind}]({kind}.md)" for kind in KINDS) + ".", "",
           "## The run config", ""]
    return "\n".join(out + params_table(describe_params(RunConfig)))


def params_page(kind: str) -> str:
    from reasonrl.core.manager import get_registry
    from reasonrl.core.registry import describe_params

    out = [f"# Parameters: {kind}", ""]
    infos = [i for i in get_registry().all() if i.kind == kind and i.package == "reasonrl"]
    for info in infos:
        rows = describe_params(info.params_model())
        out += [f"## `{info.name}`", "", cell(info.summary), ""] + (params_table(rows) if rows else ["No params.", ""])
    return "\n".join(out if infos else out + ["No built-in component of this kind."])


def params_table(rows: list[dict]) -> list[str]:
    lines = ["| option | type | default | description |", "|---|---|---|---|"]
    lines += [f"| `{r['name']}` | {code(r['type'])} | {code(as_yaml(r['value']))} | {cell(r['description'])} |"
              for r in rows]
    return lines + [""]


def cli_page() -> str:
    from reasonrl.core.cli import build_parser
    from reasonrl.core.manager import get_registry

    commands = ["plugins", "run", "config", "demo", "cache"] + registry_commands(get_registry())
    out = ["# Command line", "", "Generated from the argparse definitions: what `reasonrl COMMAND --help` prints.", "",
           "```text", build_parser().format_help().rstrip(), "```", ""]
    for command in commands:
        parser = build_parser(command)
        sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        out += [f"## `reasonrl {command}`", "", "```text", sub.choices[command].format_help().rstrip(), "```", ""]
    return "\n".join(out)


def registry_commands(registry) -> list[str]:
    return [name for name in registry.names("commands") if registry.get("commands", name).package == "reasonrl"]


def examples_page() -> str:
    """One line per ``examples/*.yaml``: its name and the first sentence of its leading comment."""
    out = ["# Example configs", "", "Generated from `examples/*.yaml` (each file opens with what it runs). "
           "Run one with `reasonrl run examples/NAME.yaml`.", "", "| config | what it runs |", "|---|---|"]
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        out.append(f"| `{path.name}` | {cell(leading_sentence(path.read_text(encoding='utf-8')))} |")
    return "\n".join(out + [""])


def leading_sentence(text: str) -> str:
    comment = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        comment.append(line.lstrip("#").strip())
    words = " ".join(comment)
    end = re.search(r"[.:;](\s|$)", words)
    return (words[:end.start() + 1] if end else words) or "(no description)"

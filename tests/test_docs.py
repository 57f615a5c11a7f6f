"""Docs stay true: the generated CLI reference is current and the README commands exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_cli_reference_is_current():
    result = subprocess.run([sys.executable, "scripts/gen_cli_docs.py", "--check"], cwd=REPO, timeout=120)
    assert result.returncode == 0, "docs/cli.md is stale: run `python scripts/gen_cli_docs.py`"


def test_readme_opens_with_install_demo_and_test_commands():
    text = (REPO / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    commands = [line for line in first_block.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2
    assert "pip install" in commands[0] and "panderm screen-tbp --demo" in commands[0]
    assert "pip install" in commands[1] and "pytest" in commands[1]
    test_command = commands[1].split("&& ")[-1]
    assert test_command in (REPO / ".ci" / "run").read_text(), "CI must run exactly the README's test command"


def test_every_readme_panderm_command_is_registered(cli):
    from panderm_cli.app import build_cli

    group = build_cli()
    import click

    names = set(group.list_commands(click.Context(group)))
    used = set(re.findall(r"^panderm ([a-z-]+)", (REPO / "README.md").read_text(), flags=re.M))
    assert used and used <= names, used - names


def test_readme_layout_table_names_every_package_and_plugin():
    text = (REPO / "README.md").read_text()
    layout = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    packages = [p.name for p in (REPO / "panderm").iterdir() if (p / "__init__.py").exists()]
    plugins = [p.name for p in (REPO / "plugins").iterdir() if (p / "__init__.py").exists()]
    missing = [name for name in packages + plugins if f"{name}/" not in layout and f"`{name}`" not in layout]
    assert packages and plugins and not missing, f"README layout table misses: {missing}"


def test_code_and_docs_cite_our_own_reference_pages():
    """The release facts we follow are in docs/reference/, not in a file outside the repository."""
    stale = [str(p.relative_to(REPO)) for folder in ("panderm", "plugins", "kernels", "panderm_cli", "docs", "tests")
             for p in (REPO / folder).rglob("*") if p.suffix in (".py", ".md") and "reference-model" in p.read_text()
             and p.name != "test_docs.py" and "reference" not in p.relative_to(REPO).parts[:2]]
    assert not stale, f"cite docs/reference/ instead of reference-model in: {stale}"

"""``mmcv-migrate shim install|uninstall|status``: zero-touch mode for code that is not rewritten.

``install`` writes a one-line ``.pth`` hook (``mmcv_migrate_shim.pth``) into the active environment's
site-packages (``sysconfig`` purelib of the Python running this command); at every interpreter start it
calls ``mmcv_runtime.shim.install_from_hook()``, which only puts a finder on ``sys.meta_path`` (no
torch import). ``uninstall`` removes the file. ``status`` says which ``mmcv._ext`` is in use (compiled
mmcv / mmcv_runtime shim / none) and whether the hook is installed and active.

No ``--user`` flag: a user site directory is shared by every environment of that Python version,
which is exactly the kind of silent global switch this mode avoids; ``--site-dir`` (or
``MMCV_MIGRATE_SHIM_SITE_DIR``) targets any other directory explicitly, tests included.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Optional

import click

PTH_NAME = "mmcv_migrate_shim.pth"
SITE_DIR_ENV = "MMCV_MIGRATE_SHIM_SITE_DIR"
_MARKER = "# mmcv-migrate zero-touch shim"
# A .pth line starting with "import" is executed by site.py at startup. The try/except keeps every
# interpreter start quiet if mmcv_runtime is later uninstalled while the hook stays behind.
_HOOK_LINE = (
    'import sys; exec("try:\\n from mmcv_runtime.shim import install_from_hook\\n'
    'except ImportError:\\n pass\\nelse:\\n install_from_hook()")'
)
PTH_TEXT = (
    f"{_MARKER}: `import mmcv._ext` -> mmcv_runtime.ext when mmcv has no compiled _ext.\n"
    "# Written by `mmcv-migrate shim install`; remove with `mmcv-migrate shim uninstall`.\n"
    f"{_HOOK_LINE}\n"
)
# Run in a fresh interpreter to check that the hook takes effect there. A site dir processed at startup
# is on sys.path already and must not be re-processed (that would hide an ordering problem); any other
# directory is processed as `site.addsitedir` would. The finder is recognised by its class name, so
# the probe itself imports nothing from mmcv_runtime.
_PROBE = (
    "import os, site, sys; d = os.path.realpath(sys.argv[1]); "
    "d in map(os.path.realpath, sys.path) or site.addsitedir(d); "
    "sys.exit(0 if any(type(f).__name__ == 'ExtShimFinder' for f in sys.meta_path) else 3)"
)


def default_site_dir() -> Path:
    """The active environment's site-packages: where ``pip install`` puts pure-Python packages."""
    return Path(sysconfig.get_paths()["purelib"])


def hook_path(site_dir: Optional[str]) -> Path:
    return Path(site_dir) if site_dir else default_site_dir()


def is_ours(pth: Path) -> bool:
    try:
        return pth.read_text(encoding="utf-8").startswith(_MARKER)
    except (OSError, UnicodeDecodeError):
        return False


def install_hook(site_dir: Path) -> Path:
    """Write the hook atomically (a half-written .pth would run a broken line at every start)."""
    site_dir.mkdir(parents=True, exist_ok=True)
    target = site_dir / PTH_NAME
    tmp = site_dir / f".{PTH_NAME}.tmp"
    tmp.write_text(PTH_TEXT, encoding="utf-8")
    os.replace(tmp, target)
    return target


def hook_takes_effect(site_dir: Path) -> bool:
    """Whether a new interpreter of this environment that processes ``site_dir`` gets the shim.

    It may not: site-packages are processed in order, and a hook in a venv's site-packages runs before
    the system site-packages that may be where mmcv-migrate is installed.
    """
    env = dict(os.environ)
    env.pop("MMCV_RUNTIME_SHIM", None)
    probe = subprocess.run([sys.executable, "-c", _PROBE, str(site_dir)], env=env,
                           capture_output=True, text=True)
    return probe.returncode == 0


_site_dir = click.option(
    "--site-dir", type=click.Path(file_okay=False), envvar=SITE_DIR_ENV, default=None,
    help=f"Directory for {PTH_NAME} (default: this environment's site-packages; env {SITE_DIR_ENV}).")


@click.group()
def shim() -> None:
    """Zero-touch mode: make `import mmcv._ext` resolve to mmcv_runtime.ext (no code changes)."""


@shim.command()
@_site_dir
def install(site_dir: Optional[str]) -> None:
    """Write the .pth hook into the environment (takes effect in new interpreters)."""
    from mmcv_runtime.shim import COMPILED, shim_status

    directory = hook_path(site_dir)
    target = install_hook(directory)
    click.echo(f"installed: {target}")
    if shim_status().ext_in_use == COMPILED:
        click.echo("note: mmcv has a compiled _ext; the shim never shadows it and stays inactive while it is there")
    if not hook_takes_effect(directory):
        click.echo(
            "warning: a new interpreter does not pick the hook up: mmcv_runtime is not importable when "
            f"{directory} is processed at startup; install mmcv-migrate into this environment "
            "(e.g. `pip install mmcv-migrate`)", err=True)
        sys.exit(1)


@shim.command()
@_site_dir
def uninstall(site_dir: Optional[str]) -> None:
    """Remove the .pth hook (new interpreters no longer get the shim)."""
    target = hook_path(site_dir) / PTH_NAME
    if not target.exists():
        click.echo(f"not installed: {target}")
        return
    if not is_ours(target):
        raise click.ClickException(f"{target} was not written by mmcv-migrate; left in place")
    target.unlink()
    click.echo(f"removed: {target}")


@shim.command()
@_site_dir
def status(site_dir: Optional[str]) -> None:
    """Say which mmcv._ext is in use and whether the hook is installed."""
    from mmcv_runtime.shim import NONE, shim_status

    target = hook_path(site_dir) / PTH_NAME
    hook_installed = target.exists() and is_ours(target)
    state = shim_status()
    in_use = state.describe()
    # This interpreter may predate `shim install`, or the hook may sit in a directory it does not
    # process: say what a new interpreter with the hook gets.
    if hook_installed and state.ext_in_use == NONE:
        in_use = "mmcv_runtime shim in new interpreters (hook installed, not active in this one)"
    click.echo(f"mmcv._ext in use: {in_use}")
    click.echo(f"mmcv: {', '.join(state.mmcv_path) or 'not installed'}")
    click.echo(f"hook: {'installed' if hook_installed else 'not installed'} ({target})")
    click.echo(f"shim active in this interpreter: {'yes' if state.shim_installed else 'no'}")

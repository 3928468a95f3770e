"""What templates install, once per node: `Installer` and its cache.

Layout under the node's cache directory (`ZLH_CACHE_DIR`, default `ZLH_DATA_DIR/cache`):
- `templates/NAME-KEY/`: one template's install (`${cache}` in the template), where KEY is
  derived from the install steps and every value they use (`Template.install_key`), so a
  changed template (a new version, another Paper jar) installs afresh beside the old one;
  `.zlh-installed` in it marks a finished install; an install without it is incomplete and is
  removed and done again;
- `templates/NAME-KEY.log`: the output of every attempt, for the operator;
- `templates/NAME-KEY.lock`: held while installing, so concurrent installs (two instances, two
  agents sharing the cache) run the steps once;
- `downloads/` (`${downloads}`): download caches shared by every template (npm, pip).

Install steps run with the agent's user and environment (see `ProcessLauncher.run_step`), umask
022: the result is readable, not writable, by the users servers may run as. Steps:
- `run`: a command (no shell), in `cwd` (default `${cache}`), with `env` added; a non-zero exit
  fails the install (`install_failed`);
- `write`: a file of the template's (`content`, verbatim) into the cache;
- `download`: a URL (http, https or file) into the cache, refused unless its SHA-256 matches
  (`checksum_mismatch`; nothing is kept);
- `packages`: Debian packages that must be installed; the missing ones are installed with
  `apt-get` (and the log and the agent's log say so), or, where that is impossible, the install
  fails naming them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from domain.templates import InstallStep, Template, TemplateError, Value
from services.agent.processes import ProcessLauncher
from services.infrastructure.files import file_lock
from services.ports import DriverError

log = logging.getLogger(__name__)

MARKER = ".zlh-installed"
#: The largest file a `download` step accepts.
MAX_DOWNLOAD_BYTES = 2 * 1024**3
#: How much of the log an `install_failed` message quotes.
LOG_TAIL = 1500


def system_python() -> str:
    """A Python 3 every user can run: the first of the system's that no private directory hides.

    A virtual environment's interpreter is a link to the Python it was made from; one under a
    private home (pyenv in `/root`) would not run for the users servers may run as.
    """
    candidates = ["/usr/bin/python3", "/usr/local/bin/python3", sys.executable]
    for candidate in candidates:
        if candidate and os.path.exists(candidate) and _reachable_by_all(Path(candidate)):
            return candidate
    return sys.executable


def _reachable_by_all(path: Path) -> bool:
    real = Path(os.path.realpath(path))
    for parent in real.parents:
        with contextlib.suppress(OSError):
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                return False
    with contextlib.suppress(OSError):
        return bool(os.stat(real).st_mode & stat.S_IXOTH)
    return False


class Installer:
    """Installs templates into the node's cache; see the module docstring."""

    def __init__(self, cache_root: Path, launcher: ProcessLauncher, python: str | None = None) -> None:
        self.cache_root = Path(cache_root).resolve()
        self.templates_dir = self.cache_root / "templates"
        self.downloads = self.cache_root / "downloads"
        self.launcher = launcher
        self.python = python or system_python()

    def cache_dir(self, template: Template, variables: Mapping[str, Value]) -> Path:
        """`templates/NAME-KEY`: where this template's install is (or goes)."""
        key = template.install_key(variables, self.python)
        return self.templates_dir / f"{template.name}-{key[:16]}"

    def installed(self, template: Template, variables: Mapping[str, Value]) -> Path | None:
        """The finished install's directory, or None."""
        directory = self.cache_dir(template, variables)
        return directory if (directory / MARKER).is_file() else None

    def install(self, template: Template, variables: Mapping[str, Value]) -> dict[str, Any]:
        """Install unless it is there: `{"cache": "NAME-KEY", "reused": bool, "seconds": float}`."""
        directory = self.cache_dir(template, variables)
        if (directory / MARKER).is_file():
            return {"cache": directory.name, "reused": True, "seconds": 0.0}
        try:
            self.templates_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
            self.downloads.mkdir(parents=True, exist_ok=True, mode=0o755)
        except OSError as exc:
            raise DriverError("io_error", f"cannot create the install cache {self.cache_root}: {exc}") from exc
        started = time.monotonic()
        with file_lock(self.templates_dir / f"{directory.name}.lock"):
            if (directory / MARKER).is_file():  # another install finished while we waited
                return {"cache": directory.name, "reused": True, "seconds": round(time.monotonic() - started, 3)}
            if directory.exists():
                log.warning("install of %s: removing an unfinished install in %s", template.name, directory)
                shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(mode=0o755)
            values = {**variables, "cache": str(directory), "downloads": str(self.downloads),
                      "system_python": self.python}
            try:
                steps = template.render_install(values)
            except TemplateError as exc:
                raise DriverError("template_error", exc.message) from exc
            log_path = self.templates_dir / f"{directory.name}.log"
            with log_path.open("ab") as out:
                _note(out, f"installing template {template.name} into {directory}")
                for number, step in enumerate(steps, 1):
                    _note(out, f"step {number}/{len(steps)}: {_describe(step)}")
                    self._run(template, number, step, directory, out, log_path)
                seconds = round(time.monotonic() - started, 3)
                _note(out, f"installed in {seconds:.1f}s")
            marker = {"template": template.name, "finished_at": datetime.now(UTC).isoformat(), "seconds": seconds}
            (directory / MARKER).write_text(json.dumps(marker) + "\n")
        log.info("installed template %s into %s in %.1fs", template.name, directory, seconds)
        return {"cache": directory.name, "reused": False, "seconds": seconds}

    # -- the steps --------------------------------------------------------------------------------

    def _run(self, template: Template, number: int, step: InstallStep, directory: Path, out: IO[bytes],
             log_path: Path) -> None:
        where = f"install step {number} of template {template.name} ({_describe(step)})"
        if step.action == "run":
            assert step.run is not None
            cwd = Path(step.cwd)
            status = self.launcher.run_step(list(step.run), cwd=cwd, env=self.launcher.install_env(step.env),
                                            timeout=step.timeout, log=out)
            if status != 0:
                out.flush()
                raise DriverError("install_failed", f"{where} exited with status {status}; the end of "
                                  f"{log_path}:\n{_tail(log_path)}")
        elif step.action == "write":
            assert step.write is not None
            target = _inside(directory, step.write, where)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(step.content, encoding="utf-8")
            target.chmod(0o755 if step.executable else 0o644)
        elif step.action == "download":
            assert step.download is not None
            self._download(step, _inside(directory, step.to, where), where, out)
        else:
            self._packages(list(step.packages or ()), where, out, log_path)

    def _download(self, step: InstallStep, target: Path, where: str, out: IO[bytes]) -> None:
        url = step.download or ""
        if not url.startswith(("http://", "https://", "file://")):
            raise DriverError("install_failed", f"{where}: only http, https and file URLs are downloaded")
        if len(step.sha256) != 64 or any(c not in "0123456789abcdef" for c in step.sha256):
            raise DriverError("install_failed", f"{where}: the sha256 to check is not 64 hexadecimal digits")
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                try:
                    opener = urllib.request.build_opener(urllib.request.ProxyHandler())
                    with opener.open(url, timeout=min(step.timeout, 120.0)) as response:
                        while chunk := response.read(1024 * 1024):
                            size += len(chunk)
                            if size > MAX_DOWNLOAD_BYTES:
                                raise DriverError("install_failed", f"{where}: larger than {MAX_DOWNLOAD_BYTES} "
                                                  "bytes")
                            digest.update(chunk)
                            f.write(chunk)
                except (urllib.error.URLError, OSError, ValueError) as exc:
                    raise DriverError("install_failed", f"{where}: cannot download: {exc}") from exc
            got = digest.hexdigest()
            if got != step.sha256:
                _note(out, f"refused the download: sha256 {got}, expected {step.sha256}")
                raise DriverError("checksum_mismatch", f"the file downloaded for {where.split(' (')[0]} does not "
                                  f"match its sha256 (expected {step.sha256}, got {got}); nothing was installed")
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
            _note(out, f"downloaded {size} bytes, sha256 {got}")
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def _packages(self, packages: list[str], where: str, out: IO[bytes], log_path: Path) -> None:
        missing = [p for p in packages if not _dpkg_installed(p)]
        if not missing:
            _note(out, f"Debian packages present: {' '.join(packages)}")
            return
        if shutil.which("apt-get") is None or os.geteuid() != 0:
            raise DriverError("install_failed", f"{where}: these Debian packages are missing and this agent cannot "
                              f"install them (it needs apt-get and root): {' '.join(missing)}")
        message = f"installing Debian packages with apt-get: {' '.join(missing)}"
        log.warning("%s: %s", where, message)
        _note(out, message)
        env = self.launcher.install_env({"DEBIAN_FRONTEND": "noninteractive"})
        argv = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
        status = self.launcher.run_step(argv, cwd=Path("/"), env=env, timeout=1800, log=out)
        if status != 0:  # the package lists may be stale or missing: update them once, then try again
            self.launcher.run_step(["apt-get", "update", "-qq"], cwd=Path("/"), env=env, timeout=1800, log=out)
            status = self.launcher.run_step(argv, cwd=Path("/"), env=env, timeout=1800, log=out)
        if status != 0:
            out.flush()
            raise DriverError("install_failed", f"{where}: apt-get could not install {' '.join(missing)}; the end "
                              f"of {log_path}:\n{_tail(log_path)}")


def _dpkg_installed(package: str) -> bool:
    if shutil.which("dpkg-query") is None:
        return False
    result = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True,
                            check=False)
    return result.returncode == 0 and result.stdout.strip().endswith(" installed")


def _inside(directory: Path, relative: str, where: str) -> Path:
    target = (directory / relative).resolve()
    if not target.is_relative_to(directory):
        raise DriverError("install_failed", f"{where}: {relative!r} is outside the install directory")
    return target


def _describe(step: InstallStep) -> str:
    if step.action == "run":
        return "run " + " ".join((step.run or ())[:4]) + (" ..." if len(step.run or ()) > 4 else "")
    if step.action == "write":
        return f"write {step.write}"
    if step.action == "download":
        return f"download {step.to}"
    return "packages " + " ".join(step.packages or ())


def _note(out: IO[bytes], text: str) -> None:
    out.write(f"[zlh {datetime.now(UTC).isoformat(timespec='seconds')}] {text}\n".encode())
    out.flush()


def _tail(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-LOG_TAIL:].decode("utf-8", "replace")

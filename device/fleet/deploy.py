"""``edgeclass deploy``: ship a bundle to a Pi over OpenSSH, switch to it, roll back if it is not healthy.

Everything on the device is done by the device's own ``edgeclass`` (``bundle
install``, ``bundle releases``, ``service status --json``, ``bundle
rollback``) and ``systemctl``, so this module only strings commands together:

1. check the bundle here (contents, hashes) so a damaged one never leaves the workstation;
2. look at the device (:mod:`.device_status`): current release, unit, health,
   and its edgeclass version (a difference from this one is named, with the
   ``setup-pi`` command that removes it);
   a deploy that stopped after installing is put straight first (``current``
   back to the release the service runs, so it stays the one to roll back to);
3. ``mktemp -d`` on the host, ``scp -r`` the bundle into it, make the copy
   readable by the service user (``scp`` keeps a 0700 directory's mode);
4. ``edgeclass bundle install`` there, as the service user: copy the listed
   files into releases/, verify (hashes and a test inference), sync, switch
   ``current`` atomically; the upload is removed in the same command;
5. bring the service up on it: ``systemctl reset-failed`` when the unit is
   ``failed`` (a crash loop hits the start limit), then ``systemctl
   reload-or-restart``, which reloads a running service (SIGHUP, hot reload)
   and starts an inactive one (a first deploy);
6. poll ``edgeclass service status --json`` until the service reports healthy
   *on the new release* (and on the Edge TPU when the device insists on it);
7. with ``--verify-accuracy``: upload the photos staged here (:mod:`.accuracy`)
   and run ``bundle evaluate`` of the new release on the device; its accuracy
   more than ``--max-drop`` points below the workstation's on the same photos
   counts as not healthy;
   when not healthy, ``edgeclass bundle rollback`` and bring it up again.

A lost connection is reported with what the device was left with, and the
next deploy (or ``deploy --status``) says where it stands.
"""

from __future__ import annotations

import json
import logging
import shlex
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .accuracy import AccuracyCheck, device_command, stage_sample, verdict, verdict_lines
from .device_status import DeviceStatus, describe_backend, edgetpu_problem, query_device
from .options import DeployOptions
from .setup import version_mismatch
from .ssh import ConnectionLost, DeployError, Session, SshTarget, last_line

log = logging.getLogger(__name__)

__all__ = ["ConnectionLost", "DeployError", "DeployOptions", "Deployment", "SshTarget", "show_status"]

UPLOAD = "/tmp/edgeclass-deploy.XXXXXX"


@dataclass
class Deployment:
    """One deploy run: call :meth:`run`; ``dry_run`` prints the commands instead."""

    bundle: Path
    target: SshTarget
    options: DeployOptions = field(default_factory=DeployOptions)
    echo: Callable[[str], None] = print
    dry_run: bool = False
    accuracy: AccuracyCheck | None = None  # --verify-accuracy: measure on the device, roll back on a drop

    def run(self) -> dict:
        """Deploy; return ``{"release", "previous", "status"}``; raise :class:`DeployError` after a rollback."""
        from ..bundle import load_bundle

        b = load_bundle(self.bundle)
        self.echo(f"deploy {b.name} ({b.path}) to {self.target.host}:{self.options.root}")
        if self.dry_run:
            return self._plan(b.path)
        with tempfile.TemporaryDirectory(prefix="edgeclass-accuracy-") as work:
            # Staged and measured here before the device is touched: a bad dataset fails first.
            self._sample = stage_sample(self.accuracy, b, Path(work)) if self.accuracy else None
            if self._sample is not None:
                self.echo(f"accuracy  {self._sample.summary()}")
            with Session(self.target) as session:
                self._session = session
                return self._deploy(b)

    # -- the steps ---------------------------------------------------------------

    def _deploy(self, b) -> dict:
        opts, host = self.options, self.target.host
        before = query_device(self._session, opts)
        for line in before.lines():
            self.echo(f"device    {line}")
        mismatch = version_mismatch(self._session, opts.remote_edgeclass)
        if mismatch is not None:
            self.echo(f"warning: {mismatch}")
        if before.interrupted:
            self.echo(f"current {Path(before.current).name} was installed by a deploy that did not finish; the service "
                      f"runs {Path(before.previous).name}: switching current back to it first, so it stays the one to "
                      "roll back to")
            self._rollback()
        try:
            installed = self._install(b)
        except ConnectionLost as exc:
            raise DeployError(f"{host}: lost the connection while installing the bundle ({exc.what}: {exc.reason}); "
                              "the device may or may not have switched current to it: "
                              f"'edgeclass deploy --status {host}' says where it stands once the host answers again") from None
        release, previous = installed["release"], installed.get("previous")
        self.echo(f"installed {release}" + (f" (previous: {previous})" if previous else " (first release)"))
        has_tpu_model = b.edgetpu_model_path is not None
        try:
            problem = self._bring_up(release, has_tpu_model)
            record = None
            if problem is None and self._sample is not None:
                record, problem = self._verify_accuracy(release)
            if problem is None:
                return {"release": release, "previous": previous, "status": "healthy",
                        **({"accuracy": record} if record else {})}
            if previous is None:
                raise DeployError(f"{host}: {release} is not healthy ({problem}) and there is no previous release to "
                                  f"roll back to; it stays current (journalctl -u {opts.service} on the device says why)")
            self.echo(f"not healthy ({problem}): rolling back to {previous}")
            self._rollback()
            after = self._bring_up(previous, None)
        except ConnectionLost as exc:
            raise DeployError(f"{host}: lost the connection after installing {Path(release).name} ({exc.what}: "
                              f"{exc.reason}); on the device, current is {Path(release).name} (previous: "
                              f"{Path(previous).name if previous else 'none'}) but the service may still run the one "
                              f"before it. When the host answers again, 'edgeclass deploy --status {host}' says what "
                              "runs and whether it is healthy, and deploying again finishes the switch") from None
        verdict = "healthy again" if after is None else f"still not healthy: {after}"
        raise DeployError(f"{host}: {Path(release).name} did not become healthy ({problem}); "
                          f"rolled back to {Path(previous).name}, {verdict}")

    def _install(self, b) -> dict:
        """Upload, make readable, install as the service user, remove the upload; the install's JSON."""
        opts, session = self.options, self._session
        tmp = session.run(f'd=$(mktemp -d {UPLOAD}) && chmod 755 "$d" && echo "$d"',
                          "create a temporary directory").stdout.strip().splitlines()[-1]
        try:
            session.copy(b.path, tmp, f"copy {b.path} to {self.target.host}:{tmp}")
        except DeployError:
            try:
                session.run(f"rm -rf -- {shlex.quote(tmp)}", "remove the temporary directory", check=False)
            except ConnectionLost:
                pass
            raise
        result = session.run(self._install_command(f"{tmp}/{b.path.name}", tmp), "install and verify the bundle")
        for line in result.stderr.splitlines():
            if line.startswith(("WARNING", "warning")):
                self.echo(f"device    {line}")
        try:
            return json.loads(result.stdout.strip().splitlines()[-1])
        except (json.JSONDecodeError, IndexError):
            raise DeployError(f"expected JSON from the device's edgeclass, got {result.stdout.strip()[-200:]!r}") from None

    def _install_command(self, staged: str, tmp: str) -> str:
        # One command: the upload is removed even when the connection drops after the install.
        opts = self.options
        install = opts.edgeclass("bundle", "install", staged, "--root", opts.root, "--keep", str(opts.keep), "--json",
                                 as_service_user=True)
        return (f"chmod -R u+rwX,go+rX -- {shlex.quote(staged)} && {install}; s=$?; "
                f"rm -rf -- {shlex.quote(tmp)}; exit $s")

    def _verify_accuracy(self, release: str) -> tuple[dict | None, str | None]:
        """Evaluate ``release`` on the device on the staged photos: (the record, the problem or None)."""
        session, sample = self._session, self._sample
        tmp = session.run(f'd=$(mktemp -d {UPLOAD}) && chmod 755 "$d" && echo "$d"',
                          "create a temporary directory").stdout.strip().splitlines()[-1]
        remote = f"{tmp}/{sample.folder.name}"
        try:
            session.copy(sample.folder, tmp, f"copy {sample.images} photos to {self.target.host}:{tmp}")
            session.run(f"chmod -R u+rwX,go+rX -- {shlex.quote(tmp)}", "make the photos readable by the service user")
            self.echo(f"accuracy  evaluating {Path(release).name} on the device ({sample.images} photos)")
            result = session.run(device_command(self.options, release, remote), "evaluate the bundle on the device",
                                 check=False)
        finally:
            session.run(f"rm -rf -- {shlex.quote(tmp)}", "remove the temporary directory", check=False)
        if result.returncode != 0:
            return None, f"the accuracy check failed on the device (exit {result.returncode}): {last_line(result)}"
        try:
            record = verdict(json.loads(result.stdout.strip().splitlines()[-1]), self.accuracy)
        except (json.JSONDecodeError, IndexError, KeyError):
            return None, f"the device's bundle evaluate printed no result: {last_line(result)}"
        for line in verdict_lines(record):
            self.echo(line)
        self.echo(f"accuracy  recorded on the device in {self.options.root}/verification/{Path(release).name}/")
        if record["passed"]:
            return record, None
        return record, (f"accuracy on the device {record['device']['accuracy']:.2%} is {record['drop_pp']:.2f} points below "
                        f"the workstation's {record['workstation']['accuracy']:.2%} on the same {record['images']} photos, "
                        f"more than --max-drop {self.accuracy.max_drop:g}")

    def _rollback(self) -> None:
        opts = self.options
        self._session.run(opts.edgeclass("bundle", "rollback", "--root", opts.root, "--json", as_service_user=True),
                          "roll back")

    def _bring_up(self, release: str, has_tpu_model: bool | None) -> str | None:
        """Start or reload the service, then wait until it is healthy on ``release``; the last problem, or None."""
        problem = self._start_or_reload()
        if problem is not None:
            return problem
        return self._wait_healthy(release, has_tpu_model)

    def _start_or_reload(self) -> str | None:
        opts, session = self.options, self._session
        if opts.reload_command:
            result = session.run(opts.reload_command, f"reload ({opts.reload_command})", check=False)
            if result.returncode != 0:
                return f"reload failed with exit {result.returncode}: {last_line(result)}"
            self.echo(f"reloaded: {opts.reload_command}")
            return None
        result = session.run(f"systemctl is-active {opts.quoted_service}", "ask systemd", check=False)
        state = (result.stdout.split() or ["unknown"])[0]
        done = []
        if state == "failed":
            # A crash loop ends in "failed" with the start limit hit: systemd refuses to start it until reset.
            result = session.run(opts.systemctl("reset-failed"), "reset the failed unit", check=False)
            if result.returncode != 0:
                return f"{opts.systemctl('reset-failed')} failed with exit {result.returncode}: {_first_line(result)}"
            done.append("reset-failed")
        result = session.run(opts.systemctl("reload-or-restart"), "start or reload the service", check=False)
        if result.returncode != 0:
            return f"{opts.systemctl('reload-or-restart')} failed with exit {result.returncode}: {_first_line(result)}"
        done.append("reloaded it" if state in ("active", "reloading") else "started it")
        self.echo(f"service {opts.service} was {state}: " + ", then ".join(done))
        return None

    def _wait_healthy(self, release: str, has_tpu_model: bool | None) -> str | None:
        opts = self.options
        deadline = time.monotonic() + opts.timeout
        status_cmd = opts.edgeclass("service", "status", "--json", "--state-file", opts.state_file)
        while True:
            result = self._session.run(status_cmd, "read the service's health", check=False, quiet=True)
            health = DeviceStatus(releases={"current": release})
            try:
                health.health = json.loads(result.stdout.strip().splitlines()[-1])
            except (json.JSONDecodeError, IndexError):
                problem = f"status command failed: {last_line(result)}"
            else:
                state = health.state
                if not health.healthy:
                    problem = "; ".join(health.health.get("problems") or ["unhealthy"])
                elif not health.on(release):
                    problem = f"the service still runs {health.running or 'an unknown bundle'}"
                else:
                    problem = edgetpu_problem(state, bool(has_tpu_model))
                    if problem is None:
                        fps = f", {state['fps']:.1f} fps" if isinstance(state.get("fps"), (int, float)) else ""
                        self.echo(f"healthy on {release} ({describe_backend(state)}{fps})")
                        return None
            if time.monotonic() >= deadline:
                return f"{problem}, after {opts.timeout:g} s"
            time.sleep(opts.poll)

    # -- the plan ------------------------------------------------------------------

    def _plan(self, bundle: Path) -> dict:
        opts, t = self.options, self.target
        staged = f"{UPLOAD}/{bundle.name}"
        steps = [
            ("list the releases", t.ssh(opts.edgeclass("bundle", "releases", "--root", opts.root, "--json"))),
            ("compare edgeclass versions (the device's and this one)", t.ssh(opts.edgeclass("--version"))),
            *([] if opts.reload_command else [("ask systemd", t.ssh(f"systemctl is-active {opts.quoted_service}"))]),
            ("read the service's health", t.ssh(opts.edgeclass("service", "status", "--json", "--state-file", opts.state_file))),
            ("create a temporary directory", t.ssh(f"mktemp -d {UPLOAD}")),
            ("copy the bundle", t.scp(bundle, UPLOAD)),
            ("make it readable by the service user, install and verify it, switch current, remove the upload",
             t.ssh(self._install_command(staged, UPLOAD))),
        ]
        if opts.reload_command:
            steps.append(("reload the service", t.ssh(opts.reload_command)))
        else:
            steps += [("if the unit is failed, reset it", t.ssh(opts.systemctl("reset-failed"))),
                      ("start or reload the service", t.ssh(opts.systemctl("reload-or-restart")))]
        steps += [
            (f"wait up to {opts.timeout:g} s for healthy on the new release", t.ssh(opts.edgeclass(
                "service", "status", "--json", "--state-file", opts.state_file))),
        ]
        if self.accuracy is not None:
            sample = f"{UPLOAD}/accuracy-sample"
            steps += [
                (f"copy at most {self.accuracy.max_images} photos of {self.accuracy.source} (a stratified sample) to "
                 "STAGED/photos, then evaluate here", ["edgeclass", "bundle", "evaluate", str(bundle), "STAGED/photos",
                                                      "--split-file", "STAGED/split.json", "-o", "STAGED/workstation"]),
                ("copy the photos", t.scp(Path("STAGED"), UPLOAD)),
                (f"evaluate the new release on them, record it; a drop over {self.accuracy.max_drop:g} points is not healthy",
                 t.ssh(device_command(opts, f"{opts.root}/releases/NEW", sample))),
            ]
        steps.append(("if not healthy: roll back, then start or reload again", t.ssh(opts.edgeclass(
            "bundle", "rollback", "--root", opts.root, "--json", as_service_user=True))))
        for text, argv in steps:
            self.echo(f"would: {text}: {shlex.join(argv)}")
        return {"release": None, "previous": None, "status": "dry-run"}


def show_status(target: SshTarget, options: DeployOptions, echo: Callable[[str], None] = print) -> DeviceStatus:
    """``deploy --status``: print where the device stands; the :class:`DeviceStatus` (``verdict()`` None = all good)."""
    echo(f"status of {target.host}:{options.root}")
    with Session(target) as session:
        status = query_device(session, options)
    for line in status.lines():
        echo(line)
    return status


def _first_line(result) -> str:
    """systemctl puts the reason first ("Job for ... failed because ...") and "See ..." after it."""
    lines = (result.stderr or result.stdout or "").strip().splitlines()
    return lines[0] if lines else "no output"

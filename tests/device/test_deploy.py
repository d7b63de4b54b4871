"""edgeclass deploy over a real OpenSSH server, to a "Pi" whose service is a real ``edgeclass run``.

The deploy runs the real ``ssh``/``scp`` clients against a real sshd on
127.0.0.1; on the device side the real installed ``edgeclass`` installs,
lists and rolls back releases and reads the health. The service is a real
``edgeclass run --config device.toml`` process classifying a looping video
and writing a real state file, started, reloaded (SIGHUP) and restarted by
the systemd stand-in (:mod:`.systemd_standin`, see :mod:`.pi_standin` for
what is and is not real).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from edgeclass.device import __version__
from edgeclass.device.bundle import load_bundle, write_bundle
from edgeclass.device.fleet.device_status import edgetpu_problem
from edgeclass.device.fleet.ssh import SshTarget

from .cli_helpers import _MAIN, edgeclass
from .pi_standin import HAVE_SSH, FakePi, Sshd, needs_ssh
from .service_fixtures import bundles  # noqa: F401  (fixture)
from .test_evaluate import colour_data  # noqa: F401  (fixture: 13 real photos, 3 filed under the wrong label)


@pytest.fixture(scope="module")
def pi_bin(tmp_path_factory) -> Path:
    """The device's bin/ directory, first on PATH in every ssh session (systemctl, sudo, edgeclass)."""
    path = Path(tmp_path_factory.mktemp("pi-bin", numbered=True))
    os.chmod(path, 0o755)
    return path


@pytest.fixture(scope="module")
def sshd(tmp_path_factory, pi_bin):
    """A throwaway sshd on 127.0.0.1 whose sessions find the device's bin/ first."""
    if not HAVE_SSH:
        pytest.skip("OpenSSH server/client not installed (Debian: apt-get install -y --no-install-recommends openssh-server)")
    server = Sshd(tmp_path_factory.mktemp("sshd"), path_first=pi_bin)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def remote_edgeclass(tmp_path_factory) -> str:
    """The device's edgeclass: the installed console script, or a wrapper running the same main()."""
    script = Path(sys.executable).parent / "edgeclass"
    if script.is_file():
        return str(script)
    wrapper = tmp_path_factory.mktemp("bin") / "edgeclass"
    wrapper.write_text(f"#!{sys.executable}\n{_MAIN}\n")
    wrapper.chmod(0o755)
    return str(wrapper)


@pytest.fixture()
def pi(colour_video, remote_edgeclass, pi_bin):
    device = FakePi(colour_video, remote_edgeclass, pi_bin)
    yield device
    device.close()


def _deploy(sshd, pi, bundle, *extra, timeout: float = 30):
    """``edgeclass deploy``, with its own TMPDIR: the ssh control directory it makes there must be gone after."""
    tmp = Path(tempfile.mkdtemp(prefix="ecd-", dir="/tmp"))  # short: the control socket path is limited
    try:
        result = edgeclass("deploy", bundle, sshd.host, *sshd.args, *pi.deploy_args(timeout), *extra, timeout=300,
                           env={"TMPDIR": str(tmp)})
        assert not list(tmp.iterdir()), f"deploy left {list(tmp.iterdir())} behind (the ssh control socket)"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for staged in pi.uploads():
        assert not staged.parent.exists(), f"the upload {staged.parent} was not removed on the device"
    return result


def _status(sshd, pi):
    return edgeclass("deploy", "--status", sshd.host, *sshd.args, *pi.deploy_args(), timeout=120)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@needs_ssh
def test_first_deploy_starts_an_inactive_service_then_reloads_it(sshd, pi, bundles):
    """The unit is installed but was never started (no bundle yet): deploy must start it, not 'reload' it."""
    assert pi.systemctl("reload").stderr.strip() == "edgeclass.service is not active, cannot reload."  # as systemd
    first = _deploy(sshd, pi, bundles["v1"])
    assert first.returncode == 0, first.stdout + first.stderr + pi.journal_text()
    release = pi.current()
    out = first.stdout
    assert "device    current   none" in out and "device    service   edgeclass: inactive" in out
    assert "(first release)" in out
    assert "service edgeclass was inactive: started it" in out
    assert f"healthy on {release} (backend " in out
    state = pi.state_json()  # written by the real service
    assert state["bundle_path"] == release and state["frames"] > 0 and _alive(state["pid"])
    assert pi.unit_state()["state"] == "active" and "ready: first frame classified with colour-v1" in pi.journal_text()

    # A second deploy reloads the running process in place (SIGHUP hot reload, same pid).
    second = _deploy(sshd, pi, bundles["v2"])
    assert second.returncode == 0, second.stdout + second.stderr + pi.journal_text()
    assert "service edgeclass was active: reloaded it" in second.stdout
    assert f"healthy on {pi.current()}" in second.stdout and Path(pi.current()).name.startswith("colour-v2-")
    assert pi.state_json()["pid"] == state["pid"]
    assert f"(previous: {release})" in second.stdout
    assert len(pi.uploads()) == 2  # and _deploy checked that both were removed


@needs_ssh
def test_a_different_edgeclass_version_on_the_device_is_named(sshd, pi, bundles, tmp_path):
    """Both ends are compared at every deploy; a difference is named with the command that removes it."""
    older = tmp_path / "edgeclass-older"
    older.write_text(f'#!/bin/sh\n[ "$1" = --version ] && {{ echo "edgeclass 0.0.1"; exit 0; }}\nexec {pi.edgeclass} "$@"\n')
    older.chmod(0o755)
    result = _deploy(sshd, pi, bundles["v1"], "--remote-edgeclass", str(older))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (f"warning: the device has edgeclass 0.0.1, this workstation edgeclass {__version__}: "
            f"'edgeclass setup-pi {sshd.host}' installs this version there") in result.stdout
    same = _deploy(sshd, pi, bundles["v2"])
    assert same.returncode == 0 and "warning: the device has" not in same.stdout, same.stdout


@needs_ssh
def test_deploy_after_a_crash_loop_resets_failed_then_starts(sshd, pi, bundles):
    """A config mistake crash-looped the unit into 'failed' (start limit hit); fixed, the next deploy must recover it."""
    good = pi.config.read_text()
    pi.write_config(text=good + "\n[decision]\nthreshhold = 0.5\n")
    assert pi.systemctl("start").returncode == 1
    pi.wait_unit("failed", "start-limit-hit")
    refused = pi.systemctl("start")
    assert refused.returncode == 1 and "start limit was hit" in refused.stderr  # systemd refuses until reset-failed
    assert "unknown key 'threshhold'" in pi.journal_text()
    pi.write_config(text=good)

    result = _deploy(sshd, pi, bundles["v1"])
    assert result.returncode == 0, result.stdout + result.stderr + pi.journal_text()
    assert "device    service   edgeclass: failed" in result.stdout
    assert "service edgeclass was failed: reset-failed, then started it" in result.stdout
    assert f"healthy on {pi.current()}" in result.stdout
    assert pi.unit_state()["state"] == "active"


@needs_ssh
def test_unhealthy_release_is_rolled_back_and_the_service_keeps_the_old_one(sshd, pi, bundles):
    good = pi.install_and_run(bundles["v1"], bundles["v2"])

    # systemd's reload itself fails (ExecReload exits non-zero) while the new release is current.
    pi.unit["exec_reload"] = f'case "$(readlink {pi.root}/current)" in *colour-v1*) exit 3;; esac; kill -HUP $MAINPID'
    pi.save_unit()
    failed = _deploy(sshd, pi, bundles["v1"], timeout=5)
    assert failed.returncode == 2, failed.stdout + failed.stderr
    assert ("did not become healthy (sudo -n systemctl reload-or-restart edgeclass failed with exit 1: "
            "Job for edgeclass.service failed because the control process exited with error code.)") in failed.stderr
    assert f"rolled back to {Path(good).name}, healthy again" in failed.stderr
    assert pi.current() == good and pi.state_json()["bundle_path"] == good
    pi.unit["exec_reload"] = None
    pi.save_unit()

    # The service reloads, but its config names one fixed release instead of current: it never runs the new one.
    pi.write_config(bundle=good)
    stuck = _deploy(sshd, pi, bundles["v1"], timeout=4)
    assert stuck.returncode == 2, stuck.stdout + stuck.stderr
    assert f"not healthy (the service still runs {good}, after 4 s): rolling back to {good}" in stuck.stdout
    assert stuck.stderr.startswith(f"error: {sshd.host}: colour-v1-")
    assert f"rolled back to {Path(good).name}, healthy again" in stuck.stderr
    assert pi.current() == good


@needs_ssh
def test_connection_lost_after_install_is_stated_and_the_next_deploy_recovers(sshd, pi, bundles):
    v1 = pi.install_and_run(bundles["v1"])
    pi.cut_network_after_install(sshd)
    try:
        lost = _deploy(sshd, pi, bundles["v2"])
    finally:
        sshd.stop()
        sshd.start()  # the Pi is back on the network
    v2 = pi.current()
    assert lost.returncode == 2 and Path(v2).name.startswith("colour-v2-"), lost.stdout + lost.stderr
    assert f"installed {v2} (previous: {v1})" in lost.stdout
    assert "lost the connection after installing " + Path(v2).name in lost.stderr
    assert f"current is {Path(v2).name} (previous: {Path(v1).name})" in lost.stderr
    assert f"'edgeclass deploy --status {sshd.host}'" in lost.stderr
    assert pi.state_json()["bundle_path"] == v1  # the service was never switched over

    status = _status(sshd, pi)
    assert status.returncode == 1, status.stdout + status.stderr
    assert f"current   {Path(v2).name}  (previous {Path(v1).name}; 2 releases)" in status.stdout
    assert f"running   {Path(v1).name}, healthy, " in status.stdout
    assert (f"verdict   NOT OK: the service still runs {Path(v1).name} but current is {Path(v2).name}: "
            "a deploy stopped after installing it") in status.stdout

    again = _deploy(sshd, pi, bundles["v2"])
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"switching current back to it first" in again.stdout
    assert f"(previous: {v1})" in again.stdout  # the release known to run stays the one to roll back to
    assert f"healthy on {pi.current()}" in again.stdout
    after = _status(sshd, pi)
    assert after.returncode == 0 and "verdict   healthy on current" in after.stdout, after.stdout


@needs_ssh
@pytest.mark.skipif(os.geteuid() != 0, reason="reading the upload as another user (the service user) needs root")
def test_upload_is_readable_by_the_service_user_even_from_a_0700_bundle(sshd, pi, bundles, tmp_path):
    """Bundles made before they were written world-readable have a 0700 directory, and scp keeps the mode."""
    private = shutil.copytree(bundles["v1"], tmp_path / "private-v1")
    for path in [private, *private.rglob("*")]:
        path.chmod(0o700 if path.is_dir() else 0o600)
    result = _deploy(sshd, pi, private)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"healthy on {pi.current()}" in result.stdout


@needs_ssh
def test_health_check_reports_the_backend_and_fails_cpu_when_edgetpu_is_required(sshd, pi, bundles, tmp_path):
    """No Edge TPU can exist here, so the service's state is the one a Pi would write: the test writes it.

    The bundle carries model_edgetpu.tflite, the device's config says edgetpu = "on", and the service reports
    it runs the CPU model: deploy must not call that healthy.
    """
    source = load_bundle(bundles["v1"])
    tpu = write_bundle(tmp_path / "tpu", model=source.model_path, labels=list(source.labels), input_spec=source.input,
                       output_spec=source.output, name="colour-tpu", edgetpu_model=source.model_path)
    writer = tmp_path / "write_state.py"
    writer.write_text(f"""\
import os, sys
from edgeclass.device.service.state import write_state
backend, model = sys.argv[1], sys.argv[2]
write_state({str(pi.state)!r}, {{"pid": os.getppid(), "started_at": 0.0, "fps": 9.5, "frames": 40, "label": "red",
    "last_error": None, "bundle_name": "colour-tpu", "bundle_path": os.path.realpath({str(pi.root / 'current')!r}),
    "backend": backend, "interpreter": "ai_edge_litert", "model": model, "edgetpu_setting": "on"}})
""")

    def deploy_with(backend: str, model: str):
        reload = f"{sys.executable} {writer} {backend} {model}"
        return _deploy(sshd, pi, tpu, "--reload-command", reload, timeout=2)

    on_cpu = deploy_with("cpu", "model.tflite")
    assert on_cpu.returncode == 2, on_cpu.stdout + on_cpu.stderr
    assert ('is not healthy (the bundle has model_edgetpu.tflite and [model] edgetpu = "on", but the service runs '
            "model.tflite on the CPU") in on_cpu.stderr
    on_tpu = deploy_with("edgetpu", "model_edgetpu.tflite")
    assert on_tpu.returncode == 0, on_tpu.stdout + on_tpu.stderr
    assert "(backend edgetpu (ai_edge_litert, model_edgetpu.tflite), 9.5 fps)" in on_tpu.stdout


def test_edgetpu_judgement_needs_all_three_conditions():
    state = {"backend": "cpu", "edgetpu_setting": "on", "model": "model.tflite"}
    assert edgetpu_problem(state, True)
    assert edgetpu_problem(state, False) is None  # no Edge TPU model: the CPU is all there is
    assert edgetpu_problem({**state, "edgetpu_setting": "auto"}, True) is None  # auto may fall back
    assert edgetpu_problem({**state, "backend": "edgetpu"}, True) is None


@needs_ssh
def test_verify_accuracy_measures_on_the_device_and_records_both(sshd, pi, bundles, colour_data, tmp_path):
    """--verify-accuracy RUN: the test split's photos go to the "Pi", which evaluates the new release itself.

    The "Pi" is this machine, so its answers equal the workstation's exactly:
    the drop is 0.00 and the agreement 100%; what differs on a real Pi is
    measured by benchmarks/arm64.py under emulation.
    """
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"path": p.relative_to(colour_data).as_posix(), "label": p.parent.name} for p in sorted(colour_data.rglob("*.*"))]
    (run / "split.json").write_text(json.dumps({"data_dir": str(colour_data), "train": [], "val": [], "test": rows}))
    result = _deploy(sshd, pi, bundles["v1"], "--verify-accuracy", run, "--max-images", "9")
    assert result.returncode == 0, result.stdout + result.stderr + pi.journal_text()
    release = pi.current()
    out = result.stdout
    assert f"accuracy  9 photos from a stratified sample of 9 of the test split of {run / 'split.json'}: " in out
    assert f"accuracy  evaluating {Path(release).name} on the device (9 photos)" in out
    assert "accuracy  drop +0.00 points (limit 1), top-1 agreement 100.00%" in out
    assert out.index(f"healthy on {release}") < out.index("accuracy  evaluating")
    record = json.loads((pi.root / "verification" / Path(release).name / "metrics.json").read_text())
    assert record["images"] == 9 and record["compared_with"]["images"] == 9
    assert record["accuracy"] == record["compared_with"]["accuracy"]
    assert record["machine"]["machine"] == record["compared_with"]["machine"]["machine"]
    assert len((pi.root / "verification" / Path(release).name / "predictions.jsonl").read_text().splitlines()) == 9
    upload = Path(record["dataset"]).parents[1]  # where the device read the photos: a temporary upload, removed after
    assert upload.name.startswith("edgeclass-deploy.") and not upload.exists(), record["dataset"]


@needs_ssh
def test_an_accuracy_drop_rolls_back_like_a_failed_health_check(sshd, pi, bundles, colour_data):
    good = pi.install_and_run(bundles["v1"])
    # The "Pi" is this machine and agrees exactly; a negative limit (the device must beat the
    # workstation by half a point) is how this test makes the real check fail.
    dropped = _deploy(sshd, pi, bundles["v2"], "--verify-accuracy", colour_data, "--max-drop", "-0.5")
    assert dropped.returncode == 2, dropped.stdout + dropped.stderr
    assert "accuracy  drop +0.00 points (limit -0.5)" in dropped.stdout
    assert ("did not become healthy (accuracy on the device 76.92% is 0.00 points below the workstation's 76.92% "
            "on the same 13 photos, more than --max-drop -0.5)") in dropped.stderr
    assert f"rolled back to {Path(good).name}, healthy again" in dropped.stderr
    assert pi.current() == good and pi.state_json()["bundle_path"] == good


def test_verify_accuracy_refuses_a_missing_dataset_before_connecting(bundles, tmp_path):
    result = edgeclass("deploy", bundles["v1"], "pi@raspberrypi.invalid", "--verify-accuracy", tmp_path / "nope")
    assert result.returncode == 2
    assert result.stderr == f"error: {tmp_path / 'nope'}: no such training run, split.json or dataset folder (--verify-accuracy)\n"


@needs_ssh
def test_remote_install_failure_leaves_device_untouched(sshd, pi, bundles):
    result = edgeclass("deploy", bundles["v1"], sshd.host, *sshd.args, *pi.deploy_args(),
                       "--remote-edgeclass", "/nonexistent/bin/edgeclass")
    assert result.returncode == 2
    assert "could not install and verify the bundle (exit 127)" in result.stderr
    assert not (pi.root / "current").exists()


def test_ssh_host_is_never_an_option(tmp_path):
    """A host named like an ssh option must reach ssh as a (bad) host name, never run a ProxyCommand."""
    marker = tmp_path / "pwned"
    target = SshTarget(f"-oProxyCommand=touch {marker}", options=("ConnectTimeout=2",))
    argvs = (target.ssh("true"), target.scp(tmp_path, "/tmp"), target.ssh_argv("-O", "check"))
    for argv in argvs:
        subprocess.run(argv, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    assert not marker.exists(), "ssh ran the host name as a ProxyCommand option"
    for argv in argvs:
        assert "--" in argv and argv[argv.index("--") + 1] in (target.host, str(tmp_path)), argv
    refused = edgeclass("deploy", "--status", "--", f"-oProxyCommand=touch {marker}")
    assert refused.returncode == 2 and not marker.exists()
    assert "host '-oProxyCommand=touch" in refused.stderr and "does not start with '-'" in refused.stderr


def test_dry_run_prints_the_plan_without_connecting(bundles):
    result = edgeclass("deploy", bundles["v1"], "pi@raspberrypi.invalid", "--dry-run", "-p", "2222", "-i", __file__)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith(f"deploy colour-v1 ({bundles['v1']}) to pi@raspberrypi.invalid:/var/lib/edgeclass\n")
    assert "would: copy the bundle: scp -r -q -P 2222 -i " in out and f" -- {bundles['v1']} pi@raspberrypi.invalid:" in out
    assert ("sudo -n -u edgeclass /opt/edgeclass/venv/bin/edgeclass bundle install "
            "/tmp/edgeclass-deploy.XXXXXX/v1 --root /var/lib/edgeclass --keep 3 --json") in out
    assert "chmod -R u+rwX,go+rX -- /tmp/edgeclass-deploy.XXXXXX/v1 && " in out
    assert "would: ask systemd: ssh -p 2222" in out and " -- pi@raspberrypi.invalid 'systemctl is-active edgeclass'" in out
    assert "would: if the unit is failed, reset it:" in out and "'sudo -n systemctl reset-failed edgeclass'" in out
    assert "would: start or reload the service:" in out and "'sudo -n systemctl reload-or-restart edgeclass'" in out
    assert "/opt/edgeclass/venv/bin/edgeclass bundle rollback --root /var/lib/edgeclass --json" in out
    assert "systemctl reload edgeclass" not in out
    assert all(" -- pi@raspberrypi.invalid" in line for line in out.splitlines()[1:] if "would: " in line and " ssh " in line)
    assert "would: compare edgeclass versions (the device's and this one):" in out and "edgeclass --version" in out
    assert len([line for line in out.splitlines() if line.startswith("would: ")]) == 11


def test_damaged_bundle_never_leaves_the_workstation(bundles):
    result = edgeclass("deploy", bundles["damaged"], "pi@raspberrypi.invalid")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "model.tflite: sha256 is" in result.stderr
    assert "raspberrypi.invalid" not in result.stdout.replace("to pi@raspberrypi.invalid", "")


def test_status_needs_only_the_host():
    both = edgeclass("deploy", "--status", "bundles/x", "pi@raspberrypi.invalid")
    assert both.returncode == 2 and "--status takes only the host" in both.stderr
    neither = edgeclass("deploy")
    assert neither.returncode == 2 and "deploy needs BUNDLE and HOST" in neither.stderr

"""Shared fixtures for the meas_ml tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

#: "reduced" (default, what `make test` runs: slow checks at reduced size),
#: "full" (`make test-full`), or "fast" (what `scons` runs under EUPS: the
#: tests marked slow are skipped).
TEST_SCALE = os.environ.get("MEAS_ML_TEST_SCALE", "reduced")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if TEST_SCALE != "fast":
        return
    skip = pytest.mark.skip(
        reason="MEAS_ML_TEST_SCALE=fast (scons): slow end-to-end check skipped; `make test` runs it"
    )
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def shared_data(*parts: str) -> Path:
    """Path under ../shared/data, skipping the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data {path} is not present (../shared/data beside the checkout)")
    return path


@pytest.fixture
def simple_wcs():
    from astropy.wcs import WCS

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crpix = [50.0, 40.0]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    return wcs


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory):
    """A tiny simulated-survey repository, built once per test session.

    Tests that write to it use their own output collections.
    """
    from lsst.meas.ml.simulate import SurveyConfig, build_repo

    root = tmp_path_factory.mktemp("tiny") / "repo"
    build_repo(root, SurveyConfig.tiny())
    return root


def _postgres_bindir() -> Path | None:
    """Directory of the PostgreSQL server programs (initdb, pg_ctl), if installed."""
    import glob
    import shutil

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL server on loopback, started for the test session; yields a database URL.

    Skips, saying why, when the server programs (Debian's ``postgresql``) or
    ``psycopg2`` are missing.  As root the server runs as the ``postgres``
    user (PostgreSQL refuses root).  The data directory is removed at the end.
    """
    import pwd
    import shutil
    import socket
    import subprocess
    import tempfile

    bindir = _postgres_bindir()
    if bindir is None:
        pytest.skip(
            "PostgreSQL server not installed (initdb/pg_ctl not found; Debian: apt-get install postgresql)"
        )
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip(
            "psycopg is not installed (pip install 'psycopg[binary]'): PostgreSQL registry test skipped"
        )
    prefix: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="meas_ml_pg_"))
    base.chmod(0o755)
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(base)
            pytest.skip("running as root and there is no 'postgres' user to run the PostgreSQL server")
        os.chown(base, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data = base / "data"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def run(*cmd: str) -> None:
        proc = subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")

    try:
        run(
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        )
        run(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-t",
            "60",
            "-l",
            str(base / "server.log"),
            "-o",
            f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off",
            "start",
        )
    except Exception:
        shutil.rmtree(base, ignore_errors=True)
        raise
    try:
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "meas_ml")
        # The Butler's PostgreSQL registry needs this extension (an administrator's step at a centre).
        run(
            str(bindir / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "postgres",
            "-d",
            "meas_ml",
            "-c",
            "CREATE EXTENSION btree_gist;",
        )
        yield f"postgresql://postgres@127.0.0.1:{port}/meas_ml"
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            capture_output=True,
            timeout=120,
            check=False,
        )
        shutil.rmtree(base, ignore_errors=True)


_SLURM_CONF = """\
ClusterName=measml
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser={user}
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={base}/munge.socket
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd.pid
SlurmctldLogFile={base}/slurmctld.log
SlurmdLogFile={base}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SwitchType=switch/none
PluginDir={plugindir}
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@pytest.fixture(scope="session")
def slurm_cluster():
    """A one-node Slurm cluster on loopback (private munged, slurmctld, slurmd) for the test session.

    Yields the environment (``SLURM_CONF`` set) in which ``sbatch``/``squeue``
    reach it.  Skips, saying why, when Debian's ``slurm-wlm`` and ``munge``
    are not installed or when not running as root (slurmd must be root to
    start jobs as their users).
    """
    import glob
    import shutil
    import socket
    import subprocess
    import tempfile
    import time

    tools = {
        name: shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
        for name in ("munged", "slurmctld", "slurmd", "sbatch", "sinfo")
    }
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        pytest.skip(
            f"Slurm test skipped: {', '.join(missing)} not found (Debian: apt-get install slurm-wlm munge)"
        )
    if os.geteuid() != 0:
        pytest.skip("Slurm test skipped: slurmd needs root to launch jobs; run the tests as root")
    plugins = sorted(glob.glob("/usr/lib/*/slurm-wlm")) + sorted(glob.glob("/usr/lib/slurm*"))
    if not plugins:
        pytest.skip("Slurm test skipped: no Slurm plugin directory found")
    base = Path(tempfile.mkdtemp(prefix="meas_ml_slurm_"))
    (base / "state").mkdir()
    (base / "spool").mkdir()
    key = base / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    host = socket.gethostname().split(".")[0]
    conf = base / "slurm.conf"
    conf.write_text(
        _SLURM_CONF.format(
            host=host,
            ctld_port=ports[0],
            slurmd_port=ports[1],
            user="root",
            base=base,
            plugindir=plugins[0],
            cpus=os.cpu_count() or 2,
        )
    )
    env = dict(os.environ, SLURM_CONF=str(conf))
    procs: list[subprocess.Popen] = []

    def log_tail() -> str:
        text = []
        for name in ("munged.log", "slurmctld.log", "slurmd.log"):
            path = base / name
            if path.exists():
                text.append(f"--- {name} ---\n{path.read_text()[-1500:]}")
        return "\n".join(text)

    try:
        procs.append(
            subprocess.Popen(
                [
                    tools["munged"],
                    "-F",
                    "--force",
                    f"--key-file={key}",
                    f"--socket={base}/munge.socket",
                    f"--pid-file={base}/munged.pid",
                    f"--log-file={base}/munged.log",
                    f"--seed-file={base}/munge.seed",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        time.sleep(0.5)
        procs.append(
            subprocess.Popen(
                [tools["slurmctld"], "-D", "-c", "-i", "-f", str(conf)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        procs.append(
            subprocess.Popen(
                [tools["slurmd"], "-D", "-f", str(conf), "-N", host],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        deadline = time.monotonic() + 60
        state = ""
        while time.monotonic() < deadline:
            proc = subprocess.run(
                [tools["sinfo"], "-h", "-N", "-o", "%T"], env=env, capture_output=True, text=True, check=False
            )
            state = proc.stdout.strip()
            if state.startswith("idle"):
                break
            if any(p.poll() is not None for p in procs):
                break
            time.sleep(0.5)
        else:
            state = f"timeout ({state})"
        if not state.startswith("idle"):
            raise RuntimeError(f"the one-node Slurm cluster did not come up: {state}\n{log_tail()}")
        yield env
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(base, ignore_errors=True)

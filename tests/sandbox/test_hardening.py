"""The created containers' real configuration, read back from the engine, against the hardening
list; and the same properties seen from inside a run."""

from __future__ import annotations

import json

import pytest

from app.sandbox.languages import LANGUAGES
from app.sandbox.limits import RUNSC_HOST_THREADS, SandboxLimits
from app.sandbox.pool import ContainerPool
from tests.sandbox.conftest import ALLOWED_ENV, run, sandbox_settings


def test_each_language_gets_its_own_memory_unless_one_is_set_for_all():
    """The JVM and the Go toolchain need more than an interpreter; SANDBOX_MEMORY_MB overrides."""
    settings = sandbox_settings()
    for language in LANGUAGES.values():
        limits = SandboxLimits.from_settings(settings, language)
        assert limits.host_config()["mem_limit"] == f"{language.memory_mb}m"
    assert LANGUAGES["java"].memory_mb > LANGUAGES["python"].memory_mb
    assert LANGUAGES["go"].memory_mb > LANGUAGES["bash"].memory_mb
    forced = SandboxLimits.from_settings(sandbox_settings(sandbox_memory_mb=200), LANGUAGES["java"])
    assert forced.memory_mb == 200


pytestmark = pytest.mark.docker

MB = 1024 * 1024


@pytest.fixture
def inspected(make_pool, docker_client) -> tuple[ContainerPool, dict]:
    pool = make_pool()
    (container,) = docker_client.containers.list(filters={"label": f"warmbox.pool={pool.pool_id}"})
    return pool, docker_client.api.inspect_container(container.id)


class TestHostConfig:
    def test_network_is_disabled(self, inspected):
        _, info = inspected
        assert info["HostConfig"]["NetworkMode"] == "none"  # a namespace with loopback only
        # Not NetworkDisabled: then Docker writes no /etc/hosts and `localhost` cannot resolve.
        assert not info["Config"].get("NetworkDisabled")

    def test_root_filesystem_is_read_only_and_scratch_is_a_small_tmpfs(self, inspected):
        pool, info = inspected
        host = info["HostConfig"]
        assert host["ReadonlyRootfs"] is True
        options = host["Tmpfs"]["/tmp"].split(",")
        assert {"nosuid", "nodev", "noexec", f"size={pool.settings.sandbox_tmpfs_mb}m"} <= set(
            options
        )
        assert host["IpcMode"] == "none"  # no /dev/shm, private IPC namespace

    def test_exec_scratch_is_a_second_tmpfs_without_suid_or_devices(self, inspected):
        pool, info = inspected
        options = set(info["HostConfig"]["Tmpfs"]["/exec"].split(","))
        assert {
            "nosuid",
            "nodev",
            "exec",
            f"size={pool.settings.sandbox_exec_tmpfs_mb}m",
        } <= options
        assert "noexec" not in options

    def test_no_capabilities_no_new_privileges_default_seccomp(self, inspected):
        _, info = inspected
        host = info["HostConfig"]
        assert host["CapDrop"] == ["ALL"]
        assert not host.get("CapAdd")
        assert host["SecurityOpt"] == ["no-new-privileges"]
        assert not any(
            "seccomp" in opt or "apparmor=unconfined" in opt for opt in host["SecurityOpt"]
        )
        assert host["Privileged"] is False

    def test_non_root_user_and_allowlisted_environment(self, inspected):
        _, info = inspected
        assert info["Config"]["User"] == "10001:10001"
        names = {entry.split("=", 1)[0] for entry in info["Config"]["Env"]}
        # WARMBOX_PRELOAD is for the agent only (SANDBOX_PYTHON_PRELOAD); runs never see it.
        allowed = {
            "HOME",
            "LANG",
            "PATH",
            "PYTHONDONTWRITEBYTECODE",
            "WARMBOX_PRELOAD",
            "WARMBOX_FORK_SERVER",
        }
        assert names <= ALLOWED_ENV | allowed

    def test_memory_cpu_and_pids_limits(self, inspected):
        pool, info = inspected
        host = info["HostConfig"]
        settings = pool.settings
        assert settings.sandbox_memory_mb == 0  # the default: each language's own memory
        assert host["Memory"] == LANGUAGES["python"].memory_mb * MB
        assert host["MemorySwap"] == host["Memory"]  # no swap beyond the memory limit
        assert host["NanoCpus"] == int(settings.sandbox_cpus * 1e9)
        # gVisor's own host threads live in the same cgroup: they get room of their own.
        extra = RUNSC_HOST_THREADS if settings.sandbox_runtime == "runsc" else 0
        assert host["PidsLimit"] == settings.sandbox_pids_limit + extra

    def test_ulimits(self, inspected):
        pool, info = inspected
        limits = {u["Name"]: (u["Soft"], u["Hard"]) for u in info["HostConfig"]["Ulimits"]}
        nofile = pool.settings.sandbox_nofile
        fsize = pool.settings.sandbox_fsize_mb * MB
        assert limits == {
            "nofile": (nofile, nofile),
            "fsize": (fsize, fsize),
            "core": (0, 0),
            "msgqueue": (0, 0),
        }

    def test_no_host_mounts_no_socket_no_logs(self, inspected):
        _, info = inspected
        assert info["Mounts"] == []
        assert not info["HostConfig"].get("Binds")
        assert info["HostConfig"]["LogConfig"]["Type"] == "none"
        assert info["HostConfig"]["Init"] in (None, False)

    def test_labels_mark_the_pool(self, inspected):
        pool, info = inspected
        labels = info["Config"]["Labels"]
        assert labels["warmbox.managed"] == "true"
        assert labels["warmbox.pool"] == pool.pool_id
        assert labels["warmbox.language"] == "python"


class TestSeenFromInside:
    def test_status_shows_no_capabilities_no_new_privs_and_seccomp(self, shared_pool):
        code = (
            "fields = dict(line.split(':', 1) for line in open('/proc/self/status'))\n"
            "names = ('CapEff', 'CapBnd', 'NoNewPrivs', 'Seccomp')\n"
            "print(*(fields[name].strip() for name in names))"
        )
        result = run(shared_pool, code)
        assert result.stdout.split() == ["0000000000000000", "0000000000000000", "1", "2"]

    def test_only_standard_descriptors_are_open(self, shared_pool):
        code = (
            "import os\nfds = os.listdir('/proc/self/fd')\n"
            "print(sorted(int(fd) for fd in fds if os.path.exists(f'/proc/self/fd/{fd}')))"
        )
        # the listing's own directory descriptor is closed by the time exists() runs
        assert run(shared_pool, code).stdout == "[0, 1, 2]\n"

    def test_environment_holds_only_allowlisted_variables(self, shared_pool):
        result = run(shared_pool, "import json, os\nprint(json.dumps(dict(os.environ)))")
        env = json.loads(result.stdout)
        assert set(env) <= ALLOWED_ENV
        assert not any("SECRET" in key or "TOKEN" in key or "DATABASE" in key for key in env)

    def test_runs_as_the_unprivileged_user_in_its_own_pid_namespace(self, shared_pool):
        code = (
            "import os\nagent = open('/proc/1/cmdline').read().split(chr(0))[-2]\n"
            "print(os.getuid(), os.getgid(), agent)"
        )
        assert run(shared_pool, code).stdout == "10001 10001 /opt/warmbox/agent.py\n"

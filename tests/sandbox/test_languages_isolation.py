"""The hostile tests that apply, in JavaScript, bash and C as well as Python, in both pool modes:
a daemon left behind, secrets in every writable place (/tmp and the exec scratch), a fork bomb, an
output flood, a memory bomb and an endless loop. After each, the next run of the same pool (the
same container in reuse mode) must see what a fresh container sees."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from app.sandbox.languages import LANGUAGES
from app.sandbox.pool import ContainerPool
from app.sandbox.types import RunRequest, RunResult
from tests.sandbox.conftest import sandbox_settings

# Prints the other processes (not PID 1, not itself), then /tmp's and /exec's entries.
PROBE = {
    "python": (
        "import os\nme = os.getpid()\n"
        "def who(p):  # the fork server (zygote.py) by name\n"
        "    zygote = open(f'/proc/{p}/cmdline', 'rb').read().endswith(b'--zygote\\0')\n"
        "    parent = open(f'/proc/{p}/stat').read().split()[3]\n"
        "    return 'fork server' if zygote and parent == '1' else p\n"
        "others = [p for p in os.listdir('/proc') if p.isdigit() and int(p) not in (1, me)]\n"
        "print(sorted(who(p) for p in others))\n"
        "print(sorted(os.listdir('/tmp')))\nprint(sorted(os.listdir('/exec')))"
    ),
    "javascript": (
        "const fs = require('fs');\n"
        "const who = (p) => {  // the next run's parked runner (agent/execution.py) by name\n"
        "  const line = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8');\n"
        "  const stat = fs.readFileSync(`/proc/${p}/stat`, 'utf8');\n"
        "  const parent = stat.split(') ')[1].split(' ')[1];\n"
        "  return line.includes('/opt/warmbox/runner') && parent === '1' ? 'parked runner' : p;\n"
        "};\n"
        "const pids = fs.readdirSync('/proc').filter((p) => /^\\d+$/.test(p))"
        ".filter((p) => p !== '1' && p !== String(process.pid)).map(who).sort();\n"
        "console.log(JSON.stringify(pids));\n"
        "console.log(JSON.stringify(fs.readdirSync('/tmp').sort()));\n"
        "console.log(JSON.stringify(fs.readdirSync('/exec').sort()));"
    ),
    "bash": (
        "cd /proc; for p in [0-9]*; do [ $p != 1 ] && [ $p != $$ ] && [ -e /proc/$p/exe ] "
        '&& echo -n "$p "; done; echo\n'
        "ls -A /tmp | tr '\\n' ' '; echo; ls -A /exec | tr '\\n' ' '"
    ),
    "c": (
        "#include <ctype.h>\n#include <dirent.h>\n#include <stdio.h>\n#include <stdlib.h>\n"
        "#include <unistd.h>\n"
        "static void list(const char *path, int pids) {\n"
        "  DIR *d = opendir(path); struct dirent *e;\n"
        "  while ((e = readdir(d))) {\n"
        "    if (e->d_name[0] == '.') continue;\n"
        "    if (pids && (!isdigit(e->d_name[0]) || atoi(e->d_name) == 1 ||\n"
        "                 atoi(e->d_name) == getpid())) continue;\n"
        '    printf("%s ", e->d_name);\n  }\n  printf("\\n"); closedir(d);\n}\n'
        'int main(void) { list("/proc", 1); list("/tmp", 0); list("/exec", 0); return 0; }\n'
    ),
}
# What the probe prints in a fresh container: no process but the fork server (Python) or the next
# run's parked runner (JavaScript, from the container's second run on); only the program (and,
# for C, its build) in its working directory.
FRESH = {
    "python": ["['fork server']", "['main.py']", "[]"],
    # With pre-imports (test_bare_runner.py) these programs name no package and run in the bare
    # runner: beside them the two fork servers and the idle runner with the pre-imports (a fork
    # keeps its fork server's command line).
    "python+numpy": ["['fork server', 'fork server', 'fork server']", "['main.py']", "[]"],
    "javascript": ['["parked runner"]', '["main.js"]', "[]"],
    "bash": ["", "main.sh", ""],
    "c": ["", "", "main main.c"],
}
DAEMON = {
    "python": (
        "import os, subprocess\n"
        "subprocess.Popen(['sleep', '60'], start_new_session=True)\n"
        "if os.fork() == 0:\n    os.setsid()\n    import time\n    time.sleep(60)"
    ),
    "javascript": (
        "const { spawn } = require('child_process');\n"
        "spawn('sleep', ['60'], { detached: true, stdio: 'ignore' }).unref();"
    ),
    "bash": "(setsid sleep 60 &) ; nohup sleep 60 >/dev/null 2>&1 &\necho left",
    "c": (
        "#include <unistd.h>\n"
        "int main(void) { if (fork() == 0) { setsid(); sleep(60); } return 0; }\n"
    ),
}
SECRETS = {
    "python": "for d in ('/tmp', '/exec'):\n    open(d + '/secret', 'w').write('s')",
    "javascript": (
        "for (const d of ['/tmp', '/exec']) require('fs').writeFileSync(d + '/secret', 's');"
    ),
    "bash": "echo s > /tmp/secret; echo s > /exec/secret; mkdir -p /exec/d/e; echo s > /exec/d/e/f",
    "c": (
        "#include <stdio.h>\n"
        'int main(void) { fclose(fopen("/tmp/secret", "w")); fclose(fopen("/exec/secret", "w"));\n'
        '  fclose(fopen("/exec/.hidden", "w")); return 0; }\n'
    ),
}
FORK_BOMB = {
    "python": (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    ),
    "javascript": (
        "const { spawn } = require('child_process');\n"
        "setInterval(() => { for (let i = 0; i < 50; i++) "
        "{ try { spawn('sleep', ['60']).on('error', () => {}); } catch (e) {} } }, 1);"
    ),
    "bash": ":(){ :|:& };:",
    "c": "#include <unistd.h>\nint main(void) { for (;;) fork(); }\n",
}
FLOOD = {
    "python": "while True:\n    print('x' * 1000)",
    # Writes as fast as stdout drains. A tight `console.log` loop never yields to the event loop:
    # once the pipe is full (the agent busy elsewhere, as under a loaded CI) Node queues the rest
    # in memory and the output may never pass the limit before the timeout (seen in CI); that
    # program is what the endless-loop and memory cases cover.
    "javascript": (
        "const line = 'x'.repeat(1000) + '\\n';\n"
        "(function flood() {\n  while (process.stdout.write(line));\n"
        "  process.stdout.once('drain', flood);\n})();"
    ),
    "bash": "yes xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "c": '#include <stdio.h>\nint main(void) { for (;;) puts("xxxxxxxxxxxxxxxxxxxxxxxx"); }\n',
}
MEMORY_BOMB = {
    "python": "chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))",
    "javascript": "const a = [];\nfor (;;) a.push(Buffer.alloc(16 << 20, 1));",
    "bash": "head -c 2000000000 /dev/zero | tail >/dev/null",
    "c": (
        "#include <stdlib.h>\n#include <string.h>\n"
        "int main(void) {\n  for (;;) {\n    char *p = malloc(16 << 20);\n"
        "    if (p) memset(p, 1, 16 << 20);\n  }\n}\n"
    ),
}
LOOP = {
    "python": "while True:\n    pass",
    "javascript": "for (;;) {}",
    "bash": "while :; do :; done",
    "c": "int main(void) { for (;;) {} }\n",
}
# Uses 64 MB, lets it go, then tries to reset its own peak resident set through
# /proc/self/clear_refs (which would make its usage, and a grading memory limit, report less).
PEAK_RESET = {
    "python": (
        "block = b'x' * (64 << 20)\ndel block\n"
        "try:\n    with open('/proc/self/clear_refs', 'w') as refs:\n        refs.write('5')\n"
        "    print('reset')\nexcept OSError as error:\n    print('refused', error.errno)"
    ),
    "javascript": (
        "let block = Buffer.alloc(64 << 20, 1);\nblock = null;\n"
        "try {\n  require('fs').writeFileSync('/proc/self/clear_refs', '5');\n"
        "  console.log('reset');\n} catch (error) {\n  console.log('refused', error.code);\n}"
    ),
    "bash": (
        "block=$(head -c 32000000 /dev/zero | tr '\\0' x)\nunset block\n"
        "if echo 5 2>/dev/null >/proc/self/clear_refs; then echo reset; else echo refused; fi"
    ),
    "c": (
        "#include <stdio.h>\n#include <stdlib.h>\n"
        "int main(void) {\n  volatile char *p = malloc(64 << 20);  /* not optimised away */\n"
        "  for (long i = 0; i < 64 << 20; i += 4096) p[i] = 1;\n  free((void *)p);\n"
        '  FILE *refs = fopen("/proc/self/clear_refs", "w");\n'
        '  if (refs && fputs("5", refs) >= 0 && fclose(refs) == 0) puts("reset");\n'
        '  else puts("refused");\n}\n'
    ),
}
PEAK_KB = {"bash": 30_000}  # bash holds 32 MB of text; the others 64 MB
HOSTILE_LANGUAGES = ["python", "python+numpy", "javascript", "bash", "c"]


@pytest.fixture(
    scope="module",
    params=[(name, mode) for mode in ("reuse", "single_use") for name in HOSTILE_LANGUAGES],
    ids=lambda param: f"{param[0]}-{param[1]}",
)
def hostile_pool(
    request: pytest.FixtureRequest, docker_client: docker.DockerClient
) -> Iterator[ContainerPool]:
    name, mode = request.param
    language, _, preload = name.partition("+")
    settings = sandbox_settings(
        pool_mode=mode,
        pool_start_timeout_s=60.0,
        pool_acquire_timeout_s=60.0,
        sandbox_python_preload=preload,
    )
    pool = ContainerPool(settings, docker_client, LANGUAGES[language])
    pool.start()
    yield pool
    pool.shutdown()


def run(pool: ContainerPool, programs: dict[str, str], **kwargs: object) -> RunResult:
    kwargs.setdefault("timeout_s", 5.0)
    code = programs[pool.language.name]
    return pool.run(RunRequest(code=code, language=pool.language.name, **kwargs))  # type: ignore[arg-type]


def assert_fresh(pool: ContainerPool) -> None:
    result = run(pool, PROBE)
    assert result.exit_code == 0, (result.stderr, result.compile)
    lines = [line.strip() for line in result.stdout.split("\n")][:3]
    if lines[:1] == ["[]"] and pool.language.name == "javascript":
        lines[0] = '["parked runner"]'  # a container's first run: nothing is parked before it
    preload = pool.settings.sandbox_python_preload if pool.language.name == "python" else ""
    assert lines == FRESH[pool.language.name + (f"+{preload}" if preload else "")]


def test_fresh_state_is_what_the_probe_expects(hostile_pool: ContainerPool) -> None:
    assert_fresh(hostile_pool)


def test_daemon_does_not_survive_the_run(hostile_pool: ContainerPool) -> None:
    run(hostile_pool, DAEMON)
    assert_fresh(hostile_pool)


def test_secrets_in_every_writable_place_are_gone(hostile_pool: ContainerPool) -> None:
    result = run(hostile_pool, SECRETS)
    assert result.exit_code == 0, (result.stderr, result.compile)
    assert_fresh(hostile_pool)


def test_fork_bomb_is_contained(hostile_pool: ContainerPool) -> None:
    result = run(hostile_pool, FORK_BOMB, timeout_s=3.0)
    assert result.duration_s < 10
    assert_fresh(hostile_pool)


def test_output_flood_is_cut(hostile_pool: ContainerPool) -> None:
    result = run(hostile_pool, FLOOD, timeout_s=3.0)
    assert result.output_truncated
    assert len(result.stdout.encode()) <= hostile_pool.settings.run_output_limit_bytes
    assert_fresh(hostile_pool)


def test_memory_bomb_is_killed_and_flagged(hostile_pool: ContainerPool) -> None:
    result = run(hostile_pool, MEMORY_BOMB, timeout_s=10.0)
    assert result.memory_exceeded
    assert result.exit_code != 0
    assert_fresh(hostile_pool)


def test_endless_loop_times_out(hostile_pool: ContainerPool) -> None:
    result = run(hostile_pool, LOOP, timeout_s=1.0)
    assert result.timed_out
    assert result.exit_code == 137
    assert_fresh(hostile_pool)


def test_a_run_cannot_reset_its_peak_memory(hostile_pool: ContainerPool) -> None:
    result = run(hostile_pool, PEAK_RESET, timeout_s=10.0)
    assert result.exit_code == 0, (result.stderr, result.compile)
    assert result.stdout.split()[0] == "refused", result.stdout
    assert result.usage is not None
    assert result.usage.peak_memory_kb >= PEAK_KB.get(hostile_pool.language.name, 60_000)
    assert_fresh(hostile_pool)

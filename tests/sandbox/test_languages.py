"""Every language through the real engine: hello, stdin, args, an extra file, a runtime error, and
for compiled ones a compile error and a cached build. One warm container per language (reuse mode),
so the module also proves that each language's container comes back clean run after run."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from app.sandbox.languages import LANGUAGES
from app.sandbox.pool import ContainerPool
from app.sandbox.types import RunFile, RunRequest, RunResult
from tests.sandbox.conftest import PYTHON_DESCRIPTOR, sandbox_settings

PRELOAD = ",".join(PYTHON_DESCRIPTOR["preload"])  # the default of SANDBOX_PYTHON_PRELOAD

# Each program prints "hello", its arguments, the extra file's content and its stdin's first line.
ECHO = {
    "python": "import sys\nprint('hello', *sys.argv[1:], open('data.txt').read(), input())",
    "javascript": (
        "const fs = require('fs');\n"
        "const line = fs.readFileSync(0, 'utf8').split('\\n')[0];\n"
        "console.log('hello', ...process.argv.slice(2), fs.readFileSync('data.txt', 'utf8'), line);"
    ),
    "typescript": (
        "import * as fs from 'fs';\n"
        "const line: string = fs.readFileSync(0, 'utf8').split('\\n')[0];\n"
        "console.log('hello', ...process.argv.slice(2), fs.readFileSync('data.txt', 'utf8'), line);"
    ),
    "bash": 'read -r line; echo hello "$@" "$(cat data.txt)" "$line"',
    "c": (
        "#include <stdio.h>\n#include <string.h>\n"
        "int main(int argc, char **argv) {\n"
        '  char line[64] = "", data[64] = ""; FILE *f = fopen("data.txt", "r");\n'
        "  fgets(data, sizeof data, f); fgets(line, sizeof line, stdin);\n"
        '  line[strcspn(line, "\\n")] = 0; printf("hello");\n'
        '  for (int i = 1; i < argc; i++) printf(" %s", argv[i]);\n'
        '  printf(" %s %s\\n", data, line); return 0;\n}\n'
    ),
    "cpp": (
        "#include <fstream>\n#include <iostream>\n#include <string>\n"
        "int main(int argc, char **argv) {\n"
        '  std::string line, data; std::ifstream f("data.txt"); std::getline(f, data);\n'
        '  std::getline(std::cin, line); std::cout << "hello";\n'
        '  for (int i = 1; i < argc; i++) std::cout << " " << argv[i];\n'
        '  std::cout << " " << data << " " << line << std::endl;\n}\n'
    ),
    "java": (
        "import java.nio.file.*;\nimport java.util.Scanner;\n"
        "public class Main {\n  public static void main(String[] args) throws Exception {\n"
        "    String line = new Scanner(System.in).nextLine();\n"
        '    String data = Files.readString(Path.of("data.txt"));\n'
        '    System.out.println("hello " + String.join(" ", args) + " " + data + " " + line);\n'
        "  }\n}\n"
    ),
    "go": (
        'package main\n\nimport (\n\t"bufio"\n\t"fmt"\n\t"os"\n\t"strings"\n)\n\n'
        'func main() {\n\tdata, _ := os.ReadFile("data.txt")\n'
        "\tline, _ := bufio.NewReader(os.Stdin).ReadString('\\n')\n"
        '\tparts := append([]string{"hello"}, os.Args[1:]...)\n'
        "\tparts = append(parts, string(data), strings.TrimSpace(line))\n"
        '\tfmt.Println(strings.Join(parts, " "))\n}\n'
    ),
    "rust": (
        "use std::io::BufRead;\n\nfn main() {\n"
        '    let data = std::fs::read_to_string("data.txt").unwrap();\n'
        "    let mut line = String::new();\n"
        "    std::io::stdin().lock().read_line(&mut line).unwrap();\n"
        '    let mut parts = vec!["hello".to_string()];\n'
        "    parts.extend(std::env::args().skip(1));\n"
        "    parts.push(data);\n    parts.push(line.trim().to_string());\n"
        '    println!("{}", parts.join(" "));\n}\n'
    ),
}
RUNTIME_ERROR = {
    "python": "raise ValueError('boom')",
    "javascript": "throw new Error('boom');",
    "typescript": "const n: number = 1;\nthrow new Error('boom' + n);",
    "bash": "echo boom >&2; exit 3",
    "c": '#include <stdio.h>\nint main(void) { fprintf(stderr, "boom\\n"); return 3; }\n',
    "cpp": '#include <iostream>\nint main() { std::cerr << "boom" << std::endl; return 3; }\n',
    "java": (
        "public class Main {\n  public static void main(String[] a) {\n"
        '    throw new RuntimeException("boom");\n  }\n}\n'
    ),
    "go": 'package main\n\nfunc main() { panic("boom") }\n',
    "rust": 'fn main() { panic!("boom"); }\n',
}
# Source that cannot run: a compiled language's compiler refuses it; an interpreter has no
# compile step, so its syntax error is the program's own failure (and nothing of it runs).
SOURCE_ERROR = {
    "typescript": "const x: number = ;\n",
    "c": "int main(void) { return undefined_name; }\n",
    "cpp": "int main() { return undefined_name; }\n",
    "java": "public class Main { public static void main(String[] a) { int x = ; } }",
    "go": "package main\n\nfunc main() { undefinedName() }\n",
    "rust": "fn main() { undefined_name(); }\n",
    "python": "print('never'\n",
    "javascript": "console.log('never';\n",
    "bash": "if then fi\necho never\n",
}


@pytest.fixture(scope="module", params=sorted(LANGUAGES))
def language_pool(
    request: pytest.FixtureRequest, docker_client: docker.DockerClient
) -> Iterator[ContainerPool]:
    settings = sandbox_settings(
        pool_start_timeout_s=60.0, pool_acquire_timeout_s=60.0, sandbox_python_preload=PRELOAD
    )
    pool = ContainerPool(settings, docker_client, LANGUAGES[request.param])
    pool.start()
    yield pool
    pool.shutdown()


def run(pool: ContainerPool, code: str, **kwargs: object) -> RunResult:
    kwargs.setdefault("timeout_s", 10.0)
    return pool.run(RunRequest(code=code, language=pool.language.name, **kwargs))  # type: ignore[arg-type]


def test_hello_with_stdin_args_and_a_file(language_pool: ContainerPool) -> None:
    name = language_pool.language.name
    result = run(
        language_pool,
        ECHO[name],
        stdin="line one\nline two\n",
        args=("a1", "two words"),
        files=(RunFile("data.txt", b"DATA"),),
    )
    assert result.exit_code == 0, (result.stderr, result.compile)
    assert result.stdout.split() == ["hello", "a1", "two", "words", "DATA", "line", "one"]
    assert result.usage is not None
    assert result.usage.wall_time_ms > 0
    assert result.usage.peak_memory_kb > 0
    if LANGUAGES[name].compiled:
        assert result.compile is not None
        assert result.compile.exit_code == 0
        assert not result.compile.cached
    else:
        assert result.compile is None


def test_runtime_error_is_the_programs(language_pool: ContainerPool) -> None:
    result = run(language_pool, RUNTIME_ERROR[language_pool.language.name])
    assert result.exit_code != 0
    assert "boom" in result.stderr
    assert result.compile is None or result.compile.exit_code == 0


def test_compile_error_is_a_run_that_happened(language_pool: ContainerPool) -> None:
    name = language_pool.language.name
    result = run(language_pool, SOURCE_ERROR[name])
    if LANGUAGES[name].compiled:
        assert result.compile is not None
        assert result.compile.exit_code != 0
        assert result.compile.output.strip()
    else:
        assert result.compile is None
        assert result.stderr.strip()
    assert result.exit_code != 0
    assert result.stdout == ""
    assert not result.success
    assert result.build is None


def test_cached_build_skips_the_compile(language_pool: ContainerPool) -> None:
    name = language_pool.language.name
    code = ECHO[name]
    files = (RunFile("data.txt", b"DATA"),)
    if not LANGUAGES[name].compiled:  # nothing to cache: no compile, no build, every time
        for stdin in ("x\n", "y\n"):
            result = run(language_pool, code, stdin=stdin, files=files)
            assert (result.exit_code, result.compile, result.build) == (0, None, None)
            assert result.stdout.split()[-1] == stdin.strip()
        return
    first = run(language_pool, code, stdin="x\n", files=files)
    assert first.exit_code == 0, first.compile
    assert first.build is not None
    again = run(language_pool, code, stdin="y\n", files=files, build=first.build)
    assert again.compile is not None
    assert again.compile.cached
    assert again.exit_code == 0, again.stderr
    assert again.stdout.split()[-1] == "y"
    assert again.build is None


def test_hostile_file_name_is_refused_by_the_agent(language_pool: ContainerPool) -> None:
    """The host validates names; the agent refuses a path out of scratch all the same."""
    result = run(language_pool, ECHO[language_pool.language.name], files=(RunFile("../x", b"x"),))
    assert result.exit_code == 126
    assert "refused" in result.stderr


def test_python_has_numpy_pandas_and_matplotlib_preloaded(docker_client: docker.DockerClient):
    """The scientific stack is imported before the run arrives, and plots render headless."""
    settings = sandbox_settings(sandbox_python_preload=PRELOAD)
    pool = ContainerPool(settings, docker_client, LANGUAGES["python"])
    pool.start()
    try:
        code = (
            "import sys\nwarm = [m in sys.modules for m in ('numpy', 'pandas', 'matplotlib')]\n"
            "import numpy as np, pandas as pd, matplotlib.pyplot as plt\n"
            "frame = pd.DataFrame(np.arange(1000).reshape(250, 4), columns=list('abcd'))\n"
            "plt.plot(frame['a']); plt.savefig('/tmp/plot.png')\n"
            "print(warm, plt.get_backend(), int(frame['d'].sum()))"
        )
        result = run(pool, code)
        assert result.exit_code == 0, result.stderr
        assert result.stdout.lower().split() == ["[true,", "true,", "true]", "agg", "125250"]
        assert result.stderr == ""
    finally:
        pool.shutdown()


# From a run in a runner forked from the zygote with the pre-imports: the pages the zygote
# learned (its warm-ups copy them on write) must already be this process's own at its go, and
# numbered in the hundreds at least (pandas' describe() and printing touch about 1,600).
COPIED_AHEAD = """import struct, sys
import numpy
frame = sys._getframe()
while frame is not None and '_copied_pages' not in frame.f_globals:
    frame = frame.f_back
pages = frame.f_globals['_copied_pages']
own = 0
with open('/proc/self/pagemap', 'rb') as pagemap:
    for address in pages:
        pagemap.seek(address // 4096 * 8)
        (entry,) = struct.unpack('<Q', pagemap.read(8))
        own += bool(entry >> 63 & 1 and entry >> 56 & 1)
print(len(pages), own)
"""


def test_pages_a_warm_up_copies_are_copied_before_the_go(docker_client: docker.DockerClient):
    """_learn_copies and _copy_ahead (python/runner.py): measured, the copies cost a pandas
    script 4-8 ms of its own time when the runner left them to the script."""
    settings = sandbox_settings(sandbox_python_preload=PRELOAD)
    pool = ContainerPool(settings, docker_client, LANGUAGES["python"])
    pool.start()
    try:
        for _ in range(2):  # a container's first runner, then one forked after a reset
            result = run(pool, COPIED_AHEAD)
            assert result.exit_code == 0, result.stderr
            learned, own = map(int, result.stdout.split())
            assert learned > 300
            assert own >= learned * 0.95  # a page freed and reused since may be shared again
    finally:
        pool.shutdown()

"""The agent protocol, in one place: imported by the agent inside every sandbox image and by the
pool on the host (`app/sandbox/channel.py`). The image build copies this file next to agent.py,
and it is part of the image's source hash, so an image always carries the protocol it was built
with. Standard library only: the agent must start in any image that has python3.

Wire format: each message is a JSON object (a frame) preceded by its length as a 4-byte
big-endian unsigned integer. The pool writes frames to the container's stdin; the agent writes
them to its stdout (which Docker multiplexes on the attach socket; `channel.py` undoes that).

The conversation: the agent says HELLO once it has started and proved the container clean; the
pool refuses an agent whose `protocol` is not VERSION (an image built from other sources: rebuild
it). Then, one run at a time: RUN -> RESULT, then the agent cleans up on its own and sends
RESET (clean or not). CANCEL stops the run it names. PING -> PONG and CHECK -> CHECK are health
questions while idle. ERROR answers a frame the agent does not understand.

Live runs (issue 13, streaming): a RUN with `"stream": true` makes the agent send OUTPUT frames
(`id`, `stream`, `data`: UTF-8 text decoded incrementally, at most OUTPUT_CHUNK_BYTES each, never
more in total than the run's output limit) while the program runs; the RESULT still follows and
carries the whole (limited) output. A RUN with `"interactive": true` keeps the program's stdin
open after the RUN's `stdin`: the pool sends STDIN frames (`id`, `data`, `eof`) for it.

Sessions (issue 13): SESSION_OPEN / SESSION_CLOSE turn the container into a persistent session
whose RUNs (cells) share interpreter state; the session frames and fields are declared in the
sessions section below. Graded submissions (issue 12): one GRADE frame carries every case of a
submission; the agent answers a CASE frame per case and a GRADED frame, then resets once (see the
graded submissions section below).

Each section below belongs to one feature: add a feature's names to its own section.
"""

from __future__ import annotations

import json
import struct

VERSION = 6
HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 16 * 1024 * 1024

# pool -> agent
RUN = "run"
CANCEL = "cancel"
PING = "ping"
CHECK = "check"  # also the agent's answer to it
STDIN = "stdin"  # interactive runs: more input for the running program

# agent -> pool
HELLO = "hello"
RESULT = "result"
RESET = "reset"
PONG = "pong"
ERROR = "error"
OUTPUT = "output"  # streamed runs: a chunk of output while the program runs

STREAMS = ("stdout", "stderr")
OUTPUT_CHUNK_BYTES = 16 * 1024

# --------------------------------------------------------------------------- sessions (issue 13)
SESSION_OPEN = "session_open"
SESSION_CLOSE = "session_close"
SESSION_FILE = "session_file"  # a file operation on the session's scratch, and its answer

# SESSION_OPEN (pool -> agent) fields: max_file_bytes, max_files. The agent answers SESSION_OPEN
# {ok, problem}: ok means the warm runner became the session's kernel (python only: the image
# ships SESSION_KERNEL). While a session is open a RUN is a cell in the kernel: its RESULT adds
# artifacts (list of {type: "image/png", data: base64, width, height, bytes}), interrupted (the
# cell timed out and SIGINT brought the kernel back) and restarted (the kernel had to be replaced:
# its state is lost, the scratch's files are kept). No reset follows a cell.
# SESSION_FILE fields: id, op (put | get | list | delete), path, content (base64, put only). The
# answer: id, ok, error, and content (get) or files (list: [{path, size}]).
# SESSION_CLOSE ends the session: the agent answers with the normal RESET (wipe and proof).
SESSION_KERNEL = "/opt/warmbox/kernel.py"
SESSION_GO = "session"  # the warm runner's go mode that turns it into a kernel
SESSION_FILE_OPS = ("put", "get", "list", "delete")
ARTIFACTS_MAX = 16  # figures returned per cell; more are closed and counted as dropped
ARTIFACTS_MAX_BYTES = 4 * 1024 * 1024  # PNG bytes per cell, before base64

# ------------------------------------------------------------ graded submissions (issue 12)
GRADE = "grade"  # pool -> agent: a program and all its cases, graded in one lease
CASE = "case"  # agent -> pool: one case's result, as soon as it has run
GRADED = "graded"  # agent -> pool: the grading ended; the usual RESET follows

# GRADE fields: id, code, files, output_limit, compile_timeout_s, build (as in RUN), and cases:
# a list of at most GRADE_MAX_CASES {stdin, args, timeout_s}. Every case is a fresh runner on a
# freshly wiped scratch holding only the program, its files and the build: between two cases the
# agent kills every process, removes IPC objects, wipes both scratches and proves them clean
# (cleanup.clean_container) before it places the program again and forks the next runner. The
# first case compiles (a compiled language) and every later one unpacks that build. Grading stops
# after a failed compile, a cancelled case (CANCEL with the GRADE's id) or a between-case reset
# that is not clean (GRADED `error` says why: the pool grades the rest in another container).
# CASE fields: id, index (0-based, in the GRADE's order) and the RESULT fields but `build`.
# GRADED fields: id, ran (cases run), build (the compile's build, base64, or null), error (null
# or why grading stopped early). Then the agent's full reset and its RESET frame, as after a RUN.
GRADE_MAX_CASES = 1024

# Scratch space: /tmp is noexec; compiled programs are built and run in EXEC_SCRATCH, a second tmpfs
# that allows exec (still nosuid,nodev). The agent wipes and proves both clean after every run.
SCRATCH = "/tmp"
EXEC_SCRATCH = "/exec"
SCRATCHES = (SCRATCH, EXEC_SCRATCH)
# The longest a RUN's park_delay_ms may hold a parked runner's start back.
PARK_DELAY_MAX_MS = 200
# A build archive (tar of a compile's outputs) larger than this is not returned to the pool.
BUILD_MAX_BYTES = 8 * 1024 * 1024

# Exit notices. The kernel tears a process's memory down before anyone can see it has exited: 3-5
# ms for node or a runner forked with numpy and pandas imported, on the answer's path. A runner
# whose descriptor says "exit_notice" (python, javascript, typescript) gets a token as the second
# field of its go (mode, token, args) and, as its very last act (output flushed, no thread of the
# program left, the exit status known; only in the runner's own process), writes
# "\nTOKEN STATUS\n" to EXIT_NOTICES, a FIFO of the image, and waits (at most NOTICE_WAIT_S) to
# be killed. The agent reads the FIFO and opens it afresh after every reset, a new pipe (a program
# has the agent's uid and may read or write it too: it finds only its own run's lines there). On
# a line with the token of the run under way it kills the runner and takes STATUS as its exit;
# if the runner was the run's one process and never had a child, it measures the runner's usage
# first and answers at once, while the kernel tears the runner down; otherwise it ends the run
# as at an exit (sweep, reaping, usage). Without a notice (a thread left, a signal, a node 'exit'
# listener) the run ends at the exit, as before. A forged notice ends only the forger's own run,
# as an exit would.
EXIT_NOTICES = "/opt/warmbox/exits"
NOTICE_WAIT_S = 1.0  # a runner whose notice nobody acted on exits on its own after this

# HELLO frame fields: protocol (VERSION), language, version, clean, sources (the hash of the
# sources the image was built from, sandbox_images/build.py:sources_hash; the pool refuses another).
# RUN frame fields: id, code, stdin, timeout_s, output_limit, args (list of str), files (list of
# {name, content: base64}), compile_timeout_s, build (base64 tar or null), stream (bool),
# interactive (bool), park_delay_ms (number, optional: a language that parks starts the runner for
# the run after next that long after the RESET, at most PARK_DELAY_MAX_MS, or at the next frame).
# OUTPUT frame fields: id, stream ("stdout" | "stderr"), data (text). STDIN: id, data, eof.
# RESULT frame fields: id, stdout, stderr, exit_code, duration_s, timed_out, cancelled,
# memory_exceeded, output_truncated, runner_age_ms, compile ({output, exit_code, duration_s,
# cached} or null), usage ({cpu_time_ms, wall_time_ms, peak_memory_kb}), build (base64 or null),
# exit_noticed (bool: the runner's exit notice ended the run, see EXIT_NOTICES).

# The only environment a runner gets, whatever the container's or the agent's own (a language's
# descriptor may add its own variables, e.g. MPLBACKEND or GOCACHE).
RUN_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": SCRATCH,
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONIOENCODING": "utf-8",
    "TMPDIR": SCRATCH,
}


class ProtocolError(ValueError):
    """Bytes that are not a frame of this protocol: oversized, not JSON, or not an object."""


def encode(message: dict) -> bytes:
    """One frame: the length header and the compact JSON payload."""
    payload = json.dumps(message, separators=(",", ":")).encode()
    if len(payload) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(payload)} bytes is over the limit")
    return HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Collects bytes as they arrive and hands out whole frames; the same on both sides."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def pending(self) -> bool:
        """Bytes of a frame (whole or not) are here."""
        return bool(self._buffer)

    def next_frame(self) -> dict | None:
        """The next whole frame, or None until more bytes arrive.

        Raises:
            ProtocolError: the next frame is oversized, not JSON, or not a JSON object.
        """
        if len(self._buffer) < HEADER.size:
            return None
        (length,) = HEADER.unpack_from(self._buffer)
        if length > MAX_FRAME_BYTES:
            raise ProtocolError(f"frame of {length} bytes is over the limit")
        end = HEADER.size + length
        if len(self._buffer) < end:
            return None
        payload = bytes(self._buffer[HEADER.size : end])
        del self._buffer[:end]
        try:
            frame = json.loads(payload)
        except ValueError as exc:
            raise ProtocolError("frame is not JSON") from exc
        if not isinstance(frame, dict):
            raise ProtocolError("frame is not an object")
        return frame

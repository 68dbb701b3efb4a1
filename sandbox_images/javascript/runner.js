// Warm Node runner: waits for the go on fd 3, then runs /tmp/main.js as `node main.js ARGS`.
// With TypeScript (the typescript image) the typescript module is loaded and warmed before the
// go; on the go every .ts file of the scratch is transpiled in-process (transpileModule), its
// syntax diagnostics reported on fd 4 as the compile step, and main.js run as above. Mode
// "cached" means the agent unpacked an earlier transpile: nothing to do but run.
//
// The image build runs this file once with `node --build-snapshot` (setup.sh): everything up to
// the go (node's own bootstrap, which this Debian build does not snapshot, and the typescript
// module) is then in a startup snapshot, and a runner starts from it in about half the CPU of a
// plain `node` (a third, with typescript loaded). Run without a snapshot (`node runner.js
// [--typescript]`) it does the same work at start. Modules are loaded by absolute path: a runner
// may start while a run goes on (it is parked, agent/execution.py), and `require('typescript')`
// would look in $HOME/.node_modules, which is the scratch.
'use strict';
const fs = require('fs');
const path = require('path');
const v8 = require('v8');
const vm = require('vm');
const Module = require('module');

const WORK = '/tmp';
const WARM_MODULE = '/opt/warmbox/warm.js';
const EXIT_NOTICES = '/opt/warmbox/exits'; // protocol.EXIT_NOTICES
const NOTICE_WAIT_MS = 1000; // protocol.NOTICE_WAIT_S
const TYPESCRIPT = '/usr/share/nodejs/typescript/lib/typescript.js';
const building = v8.startupSnapshot && v8.startupSnapshot.isBuildingSnapshot();
const wantsTypescript = building
  ? Boolean(process.env.WARMBOX_SNAPSHOT_TYPESCRIPT)
  : process.argv.includes('--typescript');

function loadTypescript() {
  // A snapshot's builder may require built-in modules only: the file is evaluated as CommonJS by
  // hand (what require would do), with the built-ins it asks for.
  const source = fs.readFileSync(TYPESCRIPT, 'utf8');
  const wrapper = vm.runInThisContext(Module.wrap(source), { filename: TYPESCRIPT });
  const module = { exports: {} };
  wrapper.call(module.exports, module.exports, require, module, TYPESCRIPT, path.dirname(TYPESCRIPT));
  return module.exports;
}

const typescript = wantsTypescript ? loadTypescript() : null;
const OPTIONS = typescript && {
  compilerOptions: {
    module: typescript.ModuleKind.CommonJS,
    target: typescript.ScriptTarget.ES2020,
    esModuleInterop: true,
  },
  reportDiagnostics: true,
};
if (typescript) {
  typescript.transpileModule('const warm: number = 1; console.log(warm);', OPTIONS);
}

function waitForGo() {
  fs.writeSync(4, 'R'); // ready: the go may come from here on
  const fields = fs.readFileSync(3).toString('utf8').split('\0');
  fields.pop();
  return fields;
}

function transpile() {
  const started = process.hrtime.bigint();
  const host = {
    getCanonicalFileName: (name) => name,
    getCurrentDirectory: () => WORK,
    getNewLine: () => '\n',
  };
  let output = '';
  for (const name of fs.readdirSync(WORK).filter((n) => n.endsWith('.ts') && !n.endsWith('.d.ts'))) {
    const source = fs.readFileSync(path.join(WORK, name), 'utf8');
    const result = typescript.transpileModule(source, { ...OPTIONS, fileName: name });
    const errors = (result.diagnostics || []).filter(
      (d) => d.category === typescript.DiagnosticCategory.Error,
    );
    if (errors.length) {
      output += typescript.formatDiagnostics(errors, host);
    } else {
      fs.writeFileSync(path.join(WORK, name.replace(/\.ts$/, '.js')), result.outputText);
    }
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  return { exit_code: output ? 1 : 0, duration_s: seconds, output };
}

/** What `node main.js` shows a program: none of the runner's own options (the snapshot, the
 * inspector's address), which child_process.fork would otherwise pass on to its node children. */
function withoutRunnerOptions(execArgv) {
  const kept = [];
  for (let i = 0; i < execArgv.length; i += 1) {
    if (execArgv[i] === '--snapshot-blob') {
      i += 1;
    } else if (!/^--(snapshot-blob|inspect-port)=/.test(execArgv[i])) {
      kept.push(execArgv[i]);
    }
  }
  return kept;
}

/** A runner started from a snapshot has every function still to compile; the run would pay for
 * the ones it needs. Before the go it loads a module of the image through the CommonJS loader
 * (resolve, read, wrap, compile, run: what the run's main.js goes through) and transpiles a
 * sample, then forgets the module, so the run finds require.cache as a fresh node has it. */
function warmUp() {
  Module._load(WARM_MODULE, null, false); // the snapshot's own `require` takes built-ins only
  delete Module._cache[WARM_MODULE];
  if (typescript) {
    for (let round = 0; round < 2; round += 1) {
      typescript.transpileModule(
        'interface Point { x: number; y?: string }\n' +
          'const points: Point[] = [{ x: 1 }];\n' +
          'class Box<T> { constructor(private value: T) {} get(): T { return this.value; } }\n' +
          'console.log(points.map((p) => new Box(p).get().x * 2).join(`, ${round}`));\n',
        OPTIONS,
      );
    }
  }
}

/** Tell the agent the program has ended (protocol.EXIT_NOTICES) and wait for its kill, so that it
 * can answer while the kernel tears node down (4-5 ms). Sent once node has emitted 'exit' and has
 * nothing left to do but exit with process.exitCode: at the end of the event loop or in
 * process.exit(), with no 'exit' listener (node runs the microtasks a listener queues after the
 * event, and may then exit otherwise). Stdout and stderr are pipes, which node writes
 * synchronously, so every byte is in them by then. Not sent either when an uncaught exception is
 * fatal (node emits 'exit' before it prints the error), nor for an exitCode node would read
 * otherwise than a plain integer: the run then ends at the exit, as before. Everything it calls is
 * bound here, before the program can replace it. */
function noticeExit(token) {
  const emit = process.emit;
  const { apply } = Reflect;
  const { wait } = Atomics;
  const { listenerCount } = process;
  const { O_WRONLY, O_NONBLOCK } = fs.constants;
  const { openSync, writeSync, closeSync } = fs;
  const asleep = new Int32Array(new SharedArrayBuffer(4));
  let fatal = false;
  process.emit = function emitThenNotice(event) {
    const listeners = event === 'exit' ? apply(listenerCount, process, ['exit']) : -1;
    const handled = apply(emit, this, arguments);
    if (event === 'uncaughtException' && !handled) {
      fatal = true; // node emits 'exit' now, and prints the error after it
    }
    const set = process.exitCode;
    const code = set === undefined || set === null ? 0 : set;
    const plain = typeof code === 'number' && (code | 0) === code;
    if (listeners !== 0 || fatal || process._exiting !== true || !plain) {
      return handled;
    }
    let noticed = false;
    try {
      const fd = openSync(EXIT_NOTICES, O_WRONLY | O_NONBLOCK);
      try {
        noticed = writeSync(fd, `\n${token} ${code & 0xff}\n`) > 0; // on its own line
      } finally {
        closeSync(fd);
      }
    } catch {
      // no notice: the run ends at the exit
    }
    if (noticed) {
      apply(wait, Atomics, [asleep, 0, 0, NOTICE_WAIT_MS]); // the agent's kill ends it here
    }
    return handled;
  };
}

function main() {
  // Node creates process.stdout and process.stderr on first use, which costs a first console.log
  // 20-40 ms; create them while idle (stdin is left alone: touching it could start reading it).
  void process.stdout;
  void process.stderr;
  warmUp();
  const [mode, token, ...args] = waitForGo(); // token: for the exit notice
  if (typescript && mode !== 'cached') {
    const report = transpile();
    fs.writeSync(4, JSON.stringify(report) + '\n');
    fs.closeSync(3);
    fs.closeSync(4);
    if (report.exit_code !== 0) {
      process.exit(1);
    }
  } else {
    fs.closeSync(3);
    fs.closeSync(4);
  }
  if (token) {
    noticeExit(token);
  }
  process.execArgv = withoutRunnerOptions(process.execArgv);
  process.argv = [process.argv[0], path.join(WORK, 'main.js'), ...args];
  Module.runMain();
}

if (building) {
  v8.startupSnapshot.setDeserializeMainFunction(main);
} else {
  main();
}

// Run one command, time it, and (optionally) sample the memory and CPU of the process
// under test from /proc. Every command runs in its own process group so that cleanup can
// kill a whole pipeline (bash + pg_dump + zstd + gpg) by its group id.
import { spawn, execFileSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, readdirSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

/** GNU time gives exact CPU totals (user+sys) of a whole process tree; optional. */
export const TIME_BIN = existsSync('/usr/bin/time') ? '/usr/bin/time' : null;

const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

const SAMPLE_MS = 50;

/** Process-group leaders still running; killed by killAllRunning() on exit or ^C. */
const running = new Set();

export function killAllRunning(signal = 'SIGKILL') {
  for (const pid of running) {
    try {
      process.kill(-pid, signal);
    } catch {
      /* already gone */
    }
  }
}

function read(path) {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

/** /proc/<pid>/stat (whole process) or a thread's /proc/<pid>/task/<tid>/stat: comm and CPU ticks. */
function readStat(pid, tid) {
  const s = read(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`);
  if (!s) return null;
  const close = s.lastIndexOf(')');
  const comm = s.slice(s.indexOf('(') + 1, close);
  const f = s
    .slice(close + 2)
    .trim()
    .split(' ');
  // f[0] is field 3 (state); utime=14, stime=15, cutime=16, cstime=17 → f[11..14]
  return { comm, utime: +f[11], stime: +f[12], cutime: +f[13], cstime: +f[14] };
}

function readStatusKiB(pid) {
  const s = read(`/proc/${pid}/status`);
  if (!s) return null;
  const get = (k) => {
    const m = new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s);
    return m ? Number(m[1]) : 0;
  };
  return { rss: get('VmRSS'), hwm: get('VmHWM') };
}

function childrenOf(pid) {
  const s = read(`/proc/${pid}/task/${pid}/children`);
  return s ? s.trim().split(/\s+/).filter(Boolean).map(Number) : [];
}

function tasksOf(pid) {
  try {
    return readdirSync(`/proc/${pid}/task`).map(Number);
  } catch {
    return [];
  }
}

const ticks = (n) => n / CLK_TCK;

/**
 * Run argv, return wall time and what could be observed.
 *
 * opts.sample: sample the process under test (argv[0], i.e. the node process of
 *   `node bin/dbcrate.js …`) every 50 ms: VmRSS/VmHWM of that process only (not of the
 *   pg_dump/pg_restore it spawns, which are reported apart), CPU per thread, CPU of its
 *   waited-for children.
 * opts.stdout: 'capture' to return stdout (small outputs only), default ignored.
 * opts.stderrFile: where stderr goes (appended).
 * opts.uid / opts.gid: run as that user (we are root; the PITR commands run as postgres).
 */
export async function measure(argv, opts = {}) {
  const timeFile = TIME_BIN && opts.timeFile ? opts.timeFile : null;
  const full = timeFile ? [TIME_BIN, '-f', '%e %U %S %M', '-o', timeFile, ...argv] : argv;
  const errFd = opts.stderrFile ? openSync(opts.stderrFile, 'a') : 'ignore';
  const t0 = performance.now();
  const child = spawn(full[0], full.slice(1), {
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    detached: true,
    stdio: ['ignore', opts.stdout === 'capture' ? 'pipe' : 'ignore', errFd],
    // run as another OS user (the postgres user for the PITR commands); root only
    ...(opts.uid !== undefined ? { uid: opts.uid, gid: opts.gid } : {}),
  });
  if (typeof errFd === 'number') closeSync(errFd);
  if (child.pid) running.add(child.pid);
  let stdout = '';
  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', (d) => (stdout += d));

  // --- sampling --------------------------------------------------------------------
  let target = null; // pid of the process under test
  let maxRss = 0;
  let hwm = 0;
  let self = null;
  const threads = new Map(); // tid -> { comm, cpu }
  const kids = new Map(); // pid -> { comm, hwm, cpu }
  const sample = () => {
    if (target === null) {
      if (!timeFile) target = child.pid;
      else {
        // /usr/bin/time forks, then the fork execs the command: wait until it has.
        const k = childrenOf(child.pid)[0];
        if (k && readStat(k)?.comm !== 'time') target = k;
      }
      if (target === null) return;
    }
    const st = readStatusKiB(target);
    if (!st) return;
    maxRss = Math.max(maxRss, st.rss);
    hwm = Math.max(hwm, st.hwm);
    const s = readStat(target);
    if (s) self = s;
    for (const tid of tasksOf(target)) {
      const t = readStat(target, tid);
      if (t) threads.set(tid, { comm: t.comm, cpu: ticks(t.utime + t.stime) });
    }
    for (const k of childrenOf(target)) {
      const ks = readStat(k);
      const kst = readStatusKiB(k);
      if (!ks) continue;
      const prev = kids.get(k);
      kids.set(k, {
        comm: ks.comm,
        hwm: Math.max(prev?.hwm ?? 0, kst?.hwm ?? 0),
        cpu: ticks(ks.utime + ks.stime),
      });
    }
  };
  const timer = opts.sample ? setInterval(sample, SAMPLE_MS) : null;
  if (opts.sample) setImmediate(sample);

  const { code, signal } = await new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (c, sig) => resolve({ code: c, signal: sig }));
  });
  const wall = (performance.now() - t0) / 1000;
  if (timer) clearInterval(timer);
  if (child.pid) running.delete(child.pid);

  const result = { argv, wall, code, signal, stdout };
  if (timeFile) {
    const lines = (read(timeFile) ?? '').trim().split('\n');
    const [e, u, s, m] = (lines[lines.length - 1] ?? '').split(' ').map(Number);
    if (Number.isFinite(u)) result.time = { elapsed: e, user: u, sys: s, cpu: u + s, maxRssKiB: m };
  }
  if (opts.sample && self) {
    const main = threads.get(target)?.cpu ?? 0;
    const byComm = {};
    for (const [tid, t] of threads) {
      if (tid === target) continue;
      byComm[t.comm] = (byComm[t.comm] ?? 0) + t.cpu;
    }
    result.proc = {
      pid: target,
      hwmKiB: hwm,
      maxRssKiB: maxRss,
      cpu: ticks(self.utime + self.stime),
      mainThreadCpu: main,
      otherThreadsCpu: Object.values(byComm).reduce((a, b) => a + b, 0),
      otherThreadsByName: byComm,
      // CPU of children the process has waited for (pg_dump / pg_restore), as of the last sample
      childrenCpu: ticks(self.cutime + self.cstime),
      children: [...kids.values()],
    };
  }
  return result;
}

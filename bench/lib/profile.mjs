// Summarize a V8 .cpuprofile (node --cpu-prof): self time by category and by function.
// Only the main JS thread is profiled; native worker threads (e.g. zstd's) are not in it.
import { readFileSync } from 'node:fs';

const CATEGORIES = [
  ['(idle)', (f) => f.functionName === '(idle)'],
  ['(garbage collector)', (f) => f.functionName === '(garbage collector)'],
  ['(program: native, V8, bindings)', (f) => f.functionName === '(program)' || f.functionName === '(root)'],
  ['openpgp', (f) => /node_modules\/openpgp\//.test(f.url)],
  ['@noble / crypto libs', (f) => /node_modules\/(@noble|@openpgp)\//.test(f.url)],
  ['zstd-napi / zstd-codec (JS side)', (f) => /node_modules\/zstd-(napi|codec)\//.test(f.url)],
  ['dbcrate (dist/)', (f) => /\/dist\//.test(f.url)],
  ['node:stream', (f) => /^node:internal\/(streams|webstreams)\//.test(f.url) || /^node:stream/.test(f.url)],
  ['node:crypto / hashing', (f) => /^node:internal\/crypto\//.test(f.url)],
  [
    'node:fs / net / child_process',
    (f) =>
      /^node:internal\/(fs|net|child_process|stream_base_commons)/.test(f.url) ||
      /^node:(fs|net)/.test(f.url),
  ],
  ['other node internals', (f) => /^node:/.test(f.url)],
  ['other dependencies', (f) => /node_modules\//.test(f.url)],
  ['native functions (no URL)', (f) => f.url === ''],
];

const short = (url) =>
  url
    .replace(/^file:\/\//, '')
    .replace(/^.*node_modules\//, '')
    .replace(/^.*\/dist\//, 'dist/');

export function summarizeProfile(path, topN = 15) {
  const p = JSON.parse(readFileSync(path, 'utf8'));
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map(); // node id -> microseconds
  for (let i = 0; i < p.samples.length; i++) {
    const dt = p.timeDeltas[i + 1] ?? 0; // delta to the next sample is the time spent in this one
    self.set(p.samples[i], (self.get(p.samples[i]) ?? 0) + dt);
  }
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const cats = new Map();
  const fns = new Map();
  for (const [id, us] of self) {
    const f = byId.get(id).callFrame;
    const cat = CATEGORIES.find(([, test]) => test(f))?.[0] ?? 'other';
    cats.set(cat, (cats.get(cat) ?? 0) + us);
    const key = `${f.functionName}\u0000${f.url}:${f.lineNumber + 1}`;
    fns.set(key, (fns.get(key) ?? 0) + us);
  }
  const idle = cats.get('(idle)') ?? 0;
  return {
    totalSeconds: total / 1e6,
    idleSeconds: idle / 1e6,
    categories: [...cats]
      .sort((a, b) => b[1] - a[1])
      .map(([name, us]) => ({ name, seconds: us / 1e6, percent: (100 * us) / total })),
    top: [...fns]
      .filter(([k]) => !k.startsWith('(idle)'))
      .sort((a, b) => b[1] - a[1])
      .slice(0, topN)
      .map(([k, us]) => {
        const [functionName, where] = k.split('\u0000');
        return { functionName, where: short(where) || '(native)', seconds: us / 1e6 };
      }),
  };
}

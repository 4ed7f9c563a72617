/** Summarises a V8 .cpuprofile (node --cpu-prof): top functions and packages by self time. */
import fs from 'node:fs';
import path from 'node:path';

interface CallFrame { functionName: string; url: string; lineNumber: number; columnNumber: number }
interface ProfileNode { id: number; callFrame: CallFrame; hitCount?: number; children?: number[] }
interface CpuProfile { nodes: ProfileNode[]; startTime: number; endTime: number; samples?: number[]; timeDeltas?: number[] }

export interface ProfileSummary {
  file: string;
  total_ms: number;
  top_functions: Array<{ fn: string; where: string; self_ms: number; self_pct: number }>;
  by_module: Array<{ module: string; self_ms: number; self_pct: number }>;
}

function shortUrl(url: string): string {
  if (!url) return '(native)';
  const u = url.replace(/^file:\/\//, '');
  const nm = u.lastIndexOf('node_modules/');
  if (nm >= 0) return u.slice(nm + 'node_modules/'.length);
  const dist = u.indexOf('/dist/');
  if (dist >= 0) return u.slice(dist + 1);
  return u;
}

function moduleOf(url: string): string {
  if (!url) return '(native/gc/idle)';
  const s = shortUrl(url);
  if (s.startsWith('node:')) return s.split('/')[0]!;
  if (s.startsWith('dist/')) return s.split('/').slice(0, 3).join('/').replace(/\.js$/, '');
  const parts = s.split('/');
  return parts[0]!.startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]!;
}

export function summarizeProfile(file: string, top = 25): ProfileSummary {
  const prof = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
  const selfUs = new Map<number, number>();
  if (prof.samples && prof.timeDeltas) {
    for (let i = 0; i < prof.samples.length; i++) {
      const id = prof.samples[i]!;
      // V8 attributes the delta to the following sample; the difference is negligible.
      selfUs.set(id, (selfUs.get(id) ?? 0) + Math.max(0, prof.timeDeltas[i] ?? 0));
    }
  }
  const totalUs = prof.endTime - prof.startTime;
  const byFn = new Map<string, { fn: string; where: string; us: number }>();
  const byMod = new Map<string, number>();
  for (const node of prof.nodes) {
    const us = selfUs.get(node.id) ?? 0;
    if (us === 0) continue;
    const cf = node.callFrame;
    const fn = cf.functionName || '(anonymous)';
    const where = cf.url ? `${shortUrl(cf.url)}:${cf.lineNumber + 1}` : '';
    const key = `${fn}@${where}`;
    const cur = byFn.get(key) ?? { fn, where, us: 0 };
    cur.us += us;
    byFn.set(key, cur);
    const mod = fn === '(idle)' ? '(idle)' : fn === '(garbage collector)' ? '(gc)' : moduleOf(cf.url);
    byMod.set(mod, (byMod.get(mod) ?? 0) + us);
  }
  const pct = (us: number) => Math.round((us / totalUs) * 1000) / 10;
  const ms = (us: number) => Math.round(us / 100) / 10;
  return {
    file: path.basename(file),
    total_ms: ms(totalUs),
    top_functions: [...byFn.values()].sort((a, b) => b.us - a.us).slice(0, top)
      .map((f) => ({ fn: f.fn, where: f.where, self_ms: ms(f.us), self_pct: pct(f.us) })),
    by_module: [...byMod.entries()].sort((a, b) => b[1] - a[1]).slice(0, 15)
      .map(([module, us]) => ({ module, self_ms: ms(us), self_pct: pct(us) })),
  };
}

/** `node --import tsx bench/cpu-profile.ts <file.cpuprofile>` prints the summary. */
if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(new URL(import.meta.url).pathname)) {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write('usage: node --import tsx bench/cpu-profile.ts <file.cpuprofile>\n');
    process.exit(2);
  }
  process.stdout.write(`${JSON.stringify(summarizeProfile(file, Number(process.argv[3] ?? 30)), null, 2)}\n`);
}

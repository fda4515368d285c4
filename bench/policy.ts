/**
 * EgressFilterCheck: ns per policy decision with 10 CIDR rules (issue 4: seed target < 1 us,
 * goal < 0.2 us), against two baselines measured in the same run:
 *   - floor: the same loop calling a function that returns a constant (loop + call overhead)
 *   - naive: a linear scan over the rules' string CIDRs, parsed on every call
 *   - linear: the same scan over CIDRs pre-parsed to integers (what the interval tables replace)
 * Run: npx tsx bench/policy.ts
 */
import { type FlowQuery, type IpAddr, compilePolicy, evaluate, parseCidr, parseIp } from '../src/policy/index.js';

const NOW = Date.parse('2030-01-01T00:00:00Z');
const policyInput = {
  version: 1,
  mode: 'enforce',
  egress: [
    { id: 'api', action: 'allow', cidrs: ['10.77.0.0/24'], ports: [443], protocol: 'tcp' },
    { id: 'dns', action: 'allow', cidrs: ['10.77.0.53/32'], ports: [53], protocol: 'udp' },
    { id: 'web', action: 'allow', cidrs: ['10.80.0.0/16'], ports: [80, 443], protocol: 'tcp' },
    { id: 'range', action: 'allow', cidrs: ['10.90.0.0/20'], ports: ['8000-8100'] },
    { id: 'ping', action: 'allow', cidrs: ['10.77.0.0/16'], protocol: 'icmp' },
    { id: 'db', action: 'allow', cidrs: ['172.16.5.0/24'], ports: [5432], protocol: 'tcp' },
    { id: 'cache', action: 'allow', cidrs: ['172.16.6.0/24'], ports: [6379], protocol: 'tcp' },
    { id: 'v6', action: 'allow', cidrs: ['fd77::/64'], ports: [443], protocol: 'tcp' },
    { id: 'no-admin', action: 'deny', cidrs: ['10.77.0.9/32'] },
    { id: 'no-meta', action: 'deny', cidrs: ['169.254.0.0/16'] },
  ],
} as const;
const compiled = compilePolicy(policyInput);

// 1024 flows: hits, misses, denies, v4 and some v6.
let seed = 7;
const rnd = (n: number) => {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  return (seed >>> 8) % n;
};
const addrs = ['10.77.0.1', '10.77.0.9', '10.80.3.4', '10.90.1.1', '172.16.5.5', '172.16.6.6', '169.254.169.254', '8.8.8.8', '10.77.0.53', 'fd77::1', '2001:db8::1'];
const flows: FlowQuery[] = Array.from({ length: 1024 }, () => ({
  direction: 'egress' as const,
  protocol: [6, 6, 6, 17, 1][rnd(5)],
  remote: parseIp(addrs[rnd(addrs.length)]) as IpAddr,
  dstPort: [443, 80, 53, 8050, 5432, 6379, 22][rnd(7)],
}));

// Baseline: what a straightforward implementation does (strings parsed per call).
function naive(f: FlowQuery): string {
  let allow: string | undefined;
  for (const r of policyInput.egress) {
    const proto = 'protocol' in r ? r.protocol : 'any';
    if (proto === 'tcp' && f.protocol !== 6) continue;
    if (proto === 'udp' && f.protocol !== 17) continue;
    if (proto === 'icmp' && f.protocol !== 1 && f.protocol !== 58) continue;
    if ('ports' in r) {
      if (f.protocol !== 6 && f.protocol !== 17) continue; // ports exist only for TCP and UDP
      const ok = (r.ports as ReadonlyArray<number | string>).some((p) => {
        const [lo, hi] = String(p).split('-').map(Number);
        return f.dstPort >= lo && f.dstPort <= (hi ?? lo);
      });
      if (!ok) continue;
    }
    const hit = r.cidrs.some((s) => {
      const p = parseCidr(s);
      if (!p.ok || p.cidr.addr.family !== f.remote.family) return false;
      const a = p.cidr.addr;
      const w = [a.w0, a.w1, a.w2, a.w3];
      const x = [f.remote.w0, f.remote.w1, f.remote.w2, f.remote.w3];
      for (let i = 0; i < 4; i++) {
        const keep = Math.max(0, Math.min(32, p.cidr.bits - i * 32));
        const m = keep === 0 ? 0 : (0xffffffff << (32 - keep)) >>> 0;
        if (((w[i] & m) >>> 0) !== ((x[i] & m) >>> 0)) return false;
      }
      return true;
    });
    if (!hit) continue;
    if (r.action === 'deny') return r.id;
    allow ??= r.id;
  }
  return allow ?? 'default-deny';
}

// Second baseline: the same linear scan with CIDRs pre-parsed to integers (no interval tables).
const pre = policyInput.egress.map((r) => ({
  id: r.id,
  deny: r.action === 'deny',
  proto: 'protocol' in r ? r.protocol : 'any',
  ports: 'ports' in r ? (r.ports as ReadonlyArray<number | string>).map((p) => String(p).split('-').map(Number)).map(([lo, hi]) => [lo, hi ?? lo]) : null,
  nets: r.cidrs.map((c) => {
    const p = parseCidr(c);
    if (!p.ok) throw new Error(c);
    const a = p.cidr.addr;
    const masks = [0, 1, 2, 3].map((i) => {
      const keep = Math.max(0, Math.min(32, p.cidr.bits - i * 32));
      return keep === 0 ? 0 : (0xffffffff << (32 - keep)) >>> 0;
    });
    return { family: a.family, w: [a.w0, a.w1, a.w2, a.w3], m: masks };
  }),
}));
function linear(f: FlowQuery): string {
  let allow: string | undefined;
  const x = f.remote;
  for (const r of pre) {
    if (r.proto === 'tcp' && f.protocol !== 6) continue;
    if (r.proto === 'udp' && f.protocol !== 17) continue;
    if (r.proto === 'icmp' && f.protocol !== 1 && f.protocol !== 58) continue;
    if (r.ports !== null) {
      if (f.protocol !== 6 && f.protocol !== 17) continue;
      if (!r.ports.some(([lo, hi]) => f.dstPort >= lo && f.dstPort <= hi)) continue;
    }
    let hit = false;
    for (const n of r.nets) {
      if (n.family !== x.family) continue;
      if (((x.w0 & n.m[0]) >>> 0) === n.w[0] && ((x.w1 & n.m[1]) >>> 0) === n.w[1] && ((x.w2 & n.m[2]) >>> 0) === n.w[2] && ((x.w3 & n.m[3]) >>> 0) === n.w[3]) {
        hit = true;
        break;
      }
    }
    if (!hit) continue;
    if (r.deny) return r.id;
    allow ??= r.id;
  }
  return allow ?? 'default-deny';
}

const constant = { verdict: 'deny' };
function floor(_f: FlowQuery): unknown {
  return constant;
}

/** `run(n)` performs n decisions in its own loop (one call site per candidate, so none turns megamorphic). */
function measure(name: string, run: (n: number) => number, iterations: number): number {
  let sink = run(20_000); // warm up
  const samples: number[] = [];
  for (let s = 0; s < 9; s++) {
    const t0 = process.hrtime.bigint();
    sink += run(iterations);
    samples.push(Number(process.hrtime.bigint() - t0) / iterations);
  }
  samples.sort((a, b) => a - b);
  const median = samples[4];
  console.log(`${name.padEnd(34)} ${median.toFixed(1).padStart(8)} ns/decision   (min ${samples[0].toFixed(1)}, sink ${sink % 10})`);
  return median;
}

// Sanity: the compiled evaluator and the naive scan agree on every flow.
for (const f of flows) {
  const a = evaluate(compiled, f, NOW).ruleId;
  const b = naive(f);
  if (a !== b || a !== linear(f)) throw new Error(`disagree on ${JSON.stringify(f)}: ${a} vs ${b} vs ${linear(f)}`);
}

console.log('EgressFilterCheck, 10 CIDR rules, 1024 mixed flows (v4 + v6, hits, misses, denies)');
const tEval = measure(
  'compiled evaluate()',
  (n) => {
    let hits = 0;
    for (let i = 0; i < n; i++) if (evaluate(compiled, flows[i & 1023], NOW).effective === 'allow') hits++;
    return hits;
  },
  5_000_000,
);
const tFloor = measure(
  'floor (constant function)',
  (n) => {
    let hits = 0;
    for (let i = 0; i < n; i++) if (floor(flows[i & 1023]) === constant) hits++;
    return hits;
  },
  5_000_000,
);
const tLinear = measure(
  'linear scan, pre-parsed integers',
  (n) => {
    let hits = 0;
    for (let i = 0; i < n; i++) if (linear(flows[i & 1023]) !== 'default-deny') hits++;
    return hits;
  },
  2_000_000,
);
const tNaive = measure(
  'naive (strings parsed per call)',
  (n) => {
    let hits = 0;
    for (let i = 0; i < n; i++) if (naive(flows[i & 1023]) !== 'default-deny') hits++;
    return hits;
  },
  200_000,
);
console.log('');
console.log(`evaluate: ${tEval.toFixed(1)} ns (${(tEval - tFloor).toFixed(1)} ns above the call floor)`);
console.log(`seed target < 1000 ns: ${tEval < 1000 ? 'met' : 'NOT met'}; goal < 200 ns: ${tEval < 200 ? 'met' : 'NOT met'}`);
console.log(`ratio naive / evaluate: ${(tNaive / tEval).toFixed(1)}x faster`);
console.log(`ratio linear pre-parsed / evaluate: ${(tLinear / tEval).toFixed(2)}x`);
console.log(`ratio evaluate / floor: ${(tEval / tFloor).toFixed(1)}x`);

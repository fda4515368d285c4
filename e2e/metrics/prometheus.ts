/**
 * A strict reader of the Prometheus text exposition format 0.0.4, for tests: every sample line must be
 * `name{label="value",...} number`, belong to a family announced by `# HELP` and `# TYPE` (counter, gauge,
 * histogram, summary, untyped), and counters' sample names must end in `_total`. Throws on anything else,
 * naming the line.
 */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
const SAMPLE_RE = new RegExp(`^(${NAME})(?:\\{(.*)\\})? (\\S+)(?: \\d+)?$`);
const LABEL_RE = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"(?:,|$)/;

export function parsePrometheusText(text: string): Sample[] {
  const types = new Map<string, string>();
  const helps = new Set<string>();
  const out: Sample[] = [];
  for (const [i, line] of text.split('\n').entries()) {
    if (line === '') continue;
    const where = `line ${i + 1}: ${JSON.stringify(line)}`;
    if (line.startsWith('#')) {
      const m = new RegExp(`^# (HELP|TYPE) (${NAME}) (.*)$`).exec(line);
      if (!m) throw new Error(`bad comment, ${where}`);
      if (m[1] === 'HELP') helps.add(m[2]);
      else if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(m[3])) throw new Error(`bad type, ${where}`);
      else types.set(m[2], m[3]);
      continue;
    }
    const m = SAMPLE_RE.exec(line);
    if (!m) throw new Error(`bad sample, ${where}`);
    const labels: Record<string, string> = {};
    let rest = m[2] ?? '';
    while (rest.length > 0) {
      const l = LABEL_RE.exec(rest);
      if (!l) throw new Error(`bad labels, ${where}`);
      labels[l[1]] = l[2].replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
      rest = rest.slice(l[0].length);
    }
    const value = m[3] === '+Inf' ? Infinity : m[3] === '-Inf' ? -Infinity : m[3] === 'NaN' ? NaN : Number(m[3]);
    if (Number.isNaN(value) && m[3] !== 'NaN') throw new Error(`bad value, ${where}`);
    const family = [...types.keys()].find((f) => m[1] === f || (types.get(f) === 'histogram' && [`${f}_bucket`, `${f}_sum`, `${f}_count`].includes(m[1])) || (types.get(f) === 'summary' && [`${f}_sum`, `${f}_count`].includes(m[1])));
    if (!family) throw new Error(`sample without # TYPE, ${where}`);
    if (!helps.has(family)) throw new Error(`sample without # HELP, ${where}`);
    if (types.get(family) === 'counter' && !m[1].endsWith('_total')) throw new Error(`counter not named _total, ${where}`);
    out.push({ name: m[1], labels, value });
  }
  return out;
}

/** The value of `name` with these labels (a subset match), or undefined. */
export function valueOf(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  return samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
}

/** GET url (with `Authorization: Bearer <token>` when given), assert a Prometheus content type, parse the body. */
export async function scrape(url: string, token?: string): Promise<Sample[]> {
  const res = await fetch(url, token ? { headers: { authorization: `Bearer ${token}` } } : {});
  if (res.status !== 200) throw new Error(`GET ${url}: ${res.status}`);
  const ct = res.headers.get('content-type') ?? '';
  if (!ct.startsWith('text/plain') || !ct.includes('version=0.0.4')) throw new Error(`GET ${url}: content-type ${ct}`);
  return parsePrometheusText(await res.text());
}

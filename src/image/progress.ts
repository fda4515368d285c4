/** Progress of turning an image into a rootfs; emitted by resolveRootfs, rendered by a reporter. */
export const ImagePhase = {
  /** Reading the image out of dockerd (`docker save` stream) into a spool file. */
  Export: 'export',
  /** Hashing a tarball to find its cache key. */
  Hash: 'hash',
  /** Applying a layer. */
  Extract: 'extract',
  /** Served from the cache: nothing to do. */
  Cached: 'cached',
} as const;
export type ImagePhase = (typeof ImagePhase)[keyof typeof ImagePhase];

export interface ImageProgress {
  readonly phase: ImagePhase;
  readonly bytes: number;
  readonly total?: number;
  /** Extract phase: 0-based layer index and count. */
  readonly layer?: number;
  readonly layers?: number;
  readonly name?: string;
  readonly done: boolean;
}

export interface ProgressSink {
  isTTY?: boolean;
  write(s: string): unknown;
}

const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;

/**
 * A progress renderer: a redrawn bar on a terminal (stderr), plain lines otherwise (one when a phase
 * or layer starts and one when it ends), so logs stay readable in CI. `now` is injectable for tests.
 */
export function createProgressReporter(
  out: ProgressSink = process.stderr,
  now: () => number = Date.now,
): (p: ImageProgress) => void {
  let lastDraw = -Infinity;
  const label = (p: ImageProgress) =>
    p.phase === ImagePhase.Extract && p.layers !== undefined
      ? `layer ${(p.layer ?? 0) + 1}/${p.layers}${p.name ? ` ${short(p.name)}` : ''}`
      : p.phase;
  return (p) => {
    if (out.isTTY) {
      if (!p.done && now() - lastDraw < 100) return;
      lastDraw = now();
      const width = 30;
      const frac = p.total ? Math.min(1, p.bytes / p.total) : undefined;
      const bar = frac === undefined ? '' : `[${'#'.repeat(Math.round(frac * width)).padEnd(width, '.')}] `;
      const size = p.total ? `${mb(p.bytes)}/${mb(p.total)}` : mb(p.bytes);
      out.write(`\r\x1b[2K${bar}${label(p)} ${size}${p.done ? ' done' : ''}`);
      if (p.done && (p.phase !== ImagePhase.Extract || (p.layer ?? 0) + 1 === p.layers)) {
        out.write('\n');
      }
      return;
    }
    if (p.bytes === 0 && !p.done) out.write(`${label(p)}: started${p.total ? ` (${mb(p.total)})` : ''}\n`);
    else if (p.done) out.write(`${label(p)}: done ${mb(p.bytes)}\n`);
  };
}

function short(name: string): string {
  return name.startsWith('sha256:') ? name.slice(0, 19) : name;
}

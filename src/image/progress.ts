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

/** Work shorter than this draws nothing: progress only where work takes time (ms). */
export const PROGRESS_DELAY_MS = 250;
/** Redraws at most this often (ms). */
const REDRAW_MS = 100;

const VERB: Record<ImagePhase, string> = {
  [ImagePhase.Export]: 'exporting image',
  [ImagePhase.Hash]: 'hashing tarball',
  [ImagePhase.Extract]: 'unpacking image',
  [ImagePhase.Cached]: 'cached',
};

/**
 * A progress renderer for stderr: on a terminal (`out.isTTY`), one line redrawn in place
 * (`unpacking image layer 2/3 [######........] 12.0/30.0 MB`) and ended with a newline when the phase
 * (for unpacking: the last layer) is done; off a terminal (piped, redirected) nothing at all, so the
 * CLI stays a Unix tool in a pipeline. Work that ends within PROGRESS_DELAY_MS of its start, and a
 * cache hit (no work), draw nothing. `now` (ms) is injectable for tests.
 */
export function createProgressReporter(
  out: ProgressSink = process.stderr,
  now: () => number = Date.now,
): (p: ImageProgress) => void {
  if (!out.isTTY) return () => undefined;
  let lastDraw = -Infinity;
  /** When the current phase (an unpack counts as one phase across its layers) started, and whether a line is up. */
  let started: number | undefined;
  let drawn = false;
  const label = (p: ImageProgress) =>
    p.phase === ImagePhase.Extract && p.layers !== undefined && p.layers > 1 ? `${VERB[p.phase]} layer ${(p.layer ?? 0) + 1}/${p.layers}` : VERB[p.phase];
  const draw = (p: ImageProgress) => {
    const width = 30;
    const frac = p.total ? Math.min(1, p.bytes / p.total) : undefined;
    const bar = frac === undefined ? '' : ` [${'#'.repeat(Math.round(frac * width)).padEnd(width, '.')}]`;
    const size = p.total ? `${mb(p.bytes)}/${mb(p.total)}` : mb(p.bytes);
    out.write(`\r\x1b[2K${label(p)}${bar} ${size}${p.done ? ' done' : ''}`);
    drawn = true;
    lastDraw = now();
  };
  return (p) => {
    if (p.phase === ImagePhase.Cached) return;
    const t = now();
    started ??= t;
    const last = p.done && (p.phase !== ImagePhase.Extract || p.layers === undefined || (p.layer ?? 0) + 1 >= p.layers);
    if (last) {
      // A line that is up is finished with its final figures; work too short to have drawn one leaves none.
      if (drawn) {
        draw(p);
        out.write('\n');
      }
      started = undefined;
      drawn = false;
      lastDraw = -Infinity;
      return;
    }
    if (t - started < PROGRESS_DELAY_MS || t - lastDraw < REDRAW_MS) return;
    draw(p);
  };
}

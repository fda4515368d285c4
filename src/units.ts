import { UsageError } from './errors.js';

const SIZE_RE = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)$/i;
const SCALE: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/**
 * A byte size as Docker's flags take it: "512", "64k", "256m", "2g", "1.5G", "4GiB", "100MB"
 * (k/m/g/t are powers of 1024, as in `docker run --memory`). Throws UsageError naming `what`.
 */
export function parseByteSize(s: string, what: string): number {
  const m = SIZE_RE.exec(s.trim());
  if (!m) throw new UsageError(`${what} ${JSON.stringify(s)} is not a size; use bytes or a k/m/g/t suffix, e.g. 512m or 2g`);
  const n = Math.floor(Number(m[1]) * SCALE[m[2].toLowerCase()]);
  if (!Number.isSafeInteger(n) || n <= 0) throw new UsageError(`${what} ${JSON.stringify(s)} is out of range`);
  return n;
}

/** A positive integer flag value; throws UsageError naming `what`. */
export function parseCount(s: string, what: string): number {
  if (!/^\d+$/.test(s.trim()) || Number(s) <= 0 || !Number.isSafeInteger(Number(s))) {
    throw new UsageError(`${what} ${JSON.stringify(s)} must be a positive whole number`);
  }
  return Number(s);
}

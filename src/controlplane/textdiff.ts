/**
 * A readable line diff for pending changes: JSON documents pretty-printed, then a longest-common-
 * subsequence diff of their lines, printed like `diff -u` without hunk headers ("-" removed, "+" added,
 * " " kept). Pure. Inputs are capped (MAX_DIFF_LINES per side) so a huge document cannot make the
 * O(n*m) table explode; beyond the cap the whole old text is shown removed and the new one added.
 */
export const MAX_DIFF_LINES = 2000;

/** Stable pretty JSON (`null` for an absent document), the text the diff is computed over. */
export function prettyJson(v: unknown): string {
  return v === undefined || v === null ? '' : JSON.stringify(v, null, 2);
}

/** Lines of `before` and `after` as a unified-style diff; '' when they are equal. */
export function lineDiff(before: string, after: string): string {
  if (before === after) return '';
  const a = before === '' ? [] : before.split('\n');
  const b = after === '' ? [] : after.split('\n');
  if (a.length > MAX_DIFF_LINES || b.length > MAX_DIFF_LINES) return [...a.map((l) => `-${l}`), ...b.map((l) => `+${l}`)].join('\n');
  const n = a.length;
  const m = b.length;
  // lcs[i][j] = LCS length of a[i..] and b[j..], in one flat array.
  const w = m + 1;
  const lcs = new Uint32Array((n + 1) * w);
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i * w + j] = a[i] === b[j] ? lcs[(i + 1) * w + j + 1] + 1 : Math.max(lcs[(i + 1) * w + j], lcs[i * w + j + 1]);
    }
  }
  const out: string[] = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) {
      out.push(` ${a[i]}`);
      i++;
      j++;
    } else if (lcs[(i + 1) * w + j] >= lcs[i * w + j + 1]) out.push(`-${a[i++]}`);
    else out.push(`+${b[j++]}`);
  }
  while (i < n) out.push(`-${a[i++]}`);
  while (j < m) out.push(`+${b[j++]}`);
  return out.join('\n');
}

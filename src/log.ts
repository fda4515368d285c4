import { writeSync } from 'node:fs';
import { pino, type Logger } from 'pino';

/**
 * Process logger. Logs go to stderr so stdout stays for the agent's own output and for --json data.
 * Anything that looks like key material is redacted by path, as a last line of defence: code must not
 * log keys in the first place.
 *
 * Format: a person on a terminal reads lines like the CLI's own (`lattice: warning: policy updated by
 * the control plane (cut=2)`); anything else (a file, a pipe, a log collector) gets one JSON object per
 * line. LATTICE_LOG_FORMAT=text|json chooses explicitly.
 */
const REDACT = [
  '*.privateKey', '*.presharedKey', '*.secret', '*.token', '*.jwt', '*.adminToken',
  'privateKey', 'presharedKey', 'secret', 'token', 'jwt', 'adminToken',
];

export type LogFormat = 'text' | 'json';

export function logFormat(env: string | undefined = process.env.LATTICE_LOG_FORMAT, isTTY = Boolean(process.stderr.isTTY)): LogFormat {
  if (env === 'text' || env === 'json') return env;
  return isTTY ? 'text' : 'json';
}

const LEVEL_WORD: Record<number, string> = { 10: 'trace', 20: 'debug', 30: 'info', 40: 'warning', 50: 'error', 60: 'fatal' };
const NOT_SHOWN = new Set(['level', 'time', 'pid', 'hostname', 'name', 'msg', 'v']);

/** One pino JSON line -> `lattice: warning: message (key=value, ...)\n` for people. */
export function humanLine(json: string): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json.endsWith('\n') ? json : `${json}\n`;
  }
  const level = LEVEL_WORD[Number(o.level)] ?? 'log';
  const fields = Object.entries(o)
    .filter(([k]) => !NOT_SHOWN.has(k))
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
  return `lattice: ${level}: ${String(o.msg ?? '')}${fields.length ? ` (${fields.join(', ')})` : ''}\n`;
}

export function createLogger(opts: { level?: string; name?: string; format?: LogFormat } = {}): Logger {
  const format = opts.format ?? logFormat();
  const destination = format === 'text' ? { write: (line: string) => void writeSync(2, humanLine(line)) } : pino.destination({ fd: 2, sync: true });
  return pino(
    {
      name: opts.name ?? 'lattice',
      level: opts.level ?? process.env.LATTICE_LOG_LEVEL ?? 'warn',
      redact: { paths: REDACT, censor: '[redacted]' },
      base: { pid: process.pid },
    },
    destination,
  );
}

export type { Logger };

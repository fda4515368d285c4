import { pino, type Logger } from 'pino';

/**
 * Process logger. Logs go to stderr so stdout stays for the agent's own output and for --json data.
 * Anything that looks like key material is redacted by path, as a last line of defence: code must not
 * log keys in the first place.
 */
const REDACT = [
  '*.privateKey', '*.presharedKey', '*.secret', '*.token', '*.jwt', '*.adminToken',
  'privateKey', 'presharedKey', 'secret', 'token', 'jwt', 'adminToken',
];

export function createLogger(opts: { level?: string; name?: string } = {}): Logger {
  return pino(
    {
      name: opts.name ?? 'lattice',
      level: opts.level ?? process.env.LATTICE_LOG_LEVEL ?? 'warn',
      redact: { paths: REDACT, censor: '[redacted]' },
      base: { pid: process.pid },
    },
    pino.destination({ fd: 2, sync: true }),
  );
}

export type { Logger };

import { UsageError } from '../errors.js';

/** Linux capabilities by name (capability.h, Linux 5.9+: CAP_CHOWN = 0 ... CAP_CHECKPOINT_RESTORE = 40). */
export const LINUX_CAPABILITIES = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_DAC_READ_SEARCH', 'CAP_FOWNER', 'CAP_FSETID', 'CAP_KILL', 'CAP_SETGID',
  'CAP_SETUID', 'CAP_SETPCAP', 'CAP_LINUX_IMMUTABLE', 'CAP_NET_BIND_SERVICE', 'CAP_NET_BROADCAST', 'CAP_NET_ADMIN',
  'CAP_NET_RAW', 'CAP_IPC_LOCK', 'CAP_IPC_OWNER', 'CAP_SYS_MODULE', 'CAP_SYS_RAWIO', 'CAP_SYS_CHROOT', 'CAP_SYS_PTRACE',
  'CAP_SYS_PACCT', 'CAP_SYS_ADMIN', 'CAP_SYS_BOOT', 'CAP_SYS_NICE', 'CAP_SYS_RESOURCE', 'CAP_SYS_TIME',
  'CAP_SYS_TTY_CONFIG', 'CAP_MKNOD', 'CAP_LEASE', 'CAP_AUDIT_WRITE', 'CAP_AUDIT_CONTROL', 'CAP_SETFCAP',
  'CAP_MAC_OVERRIDE', 'CAP_MAC_ADMIN', 'CAP_SYSLOG', 'CAP_WAKE_ALARM', 'CAP_BLOCK_SUSPEND', 'CAP_AUDIT_READ',
  'CAP_PERFMON', 'CAP_BPF', 'CAP_CHECKPOINT_RESTORE',
] as const;

/**
 * `--cap-add` value -> canonical name (`net_raw`, `NET_RAW` and `CAP_NET_RAW` all mean CAP_NET_RAW).
 * Throws UsageError naming the valid choices for anything else (runsc would only say "EOF").
 */
export function parseCapability(input: string): string {
  const up = input.trim().toUpperCase();
  const name = up.startsWith('CAP_') ? up : `CAP_${up}`;
  if ((LINUX_CAPABILITIES as readonly string[]).includes(name)) return name;
  const close = LINUX_CAPABILITIES.filter((c) => c.includes(name.slice(4)) || name.includes(c.slice(4)));
  const hint = close.length > 0 ? `did you mean ${close.join(' or ')}? ` : '';
  throw new UsageError(`--cap-add ${input} is not a Linux capability; ${hint}choices: ${LINUX_CAPABILITIES.map((c) => c.slice(4)).join(', ')}`);
}

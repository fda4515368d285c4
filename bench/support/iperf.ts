/**
 * iperf3 helpers for benches: the client's arguments, its JSON summary, and a copy of the host's
 * iperf3 (with its shared libraries and loader) in a sandbox rootfs. Not a bench itself (make bench
 * runs bench/*.ts only).
 */
import { execa } from 'execa';
import { copyFile, mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';

export interface Iperf {
  /** What arrived (the receiver's figure), Mbit/s. */
  mbps: number;
  /** The sender's TCP retransmits. */
  retransmits: number;
}

/** `iperf3 -c server -t secs -J`, with a bounded connect. */
export const iperfArgs = (server: string, secs: number): string[] => ['iperf3', '-c', server, '-t', String(secs), '-J', '--connect-timeout', '5000'];

/** The receiver's throughput and the sender's retransmits from iperf3 -J output; throws naming `what` when it failed. */
export function parseIperf(out: string, what: string): Iperf {
  const start = out.indexOf('{');
  if (start < 0) throw new Error(`${what}: no iperf3 JSON in output: ${out.slice(0, 400)}`);
  const j = JSON.parse(out.slice(start, out.lastIndexOf('}') + 1)) as { error?: string; end?: { sum_received?: { bits_per_second: number }; sum_sent?: { retransmits?: number } } };
  if (j.error || !j.end?.sum_received) throw new Error(`${what}: iperf3 failed: ${j.error ?? 'no summary'}`);
  return { mbps: j.end.sum_received.bits_per_second / 1e6, retransmits: j.end.sum_sent?.retransmits ?? 0 };
}

/** Copy the host's iperf3, its shared libraries and the dynamic loader into `rootfs` (iperf3 at /bin/iperf3). */
export async function addIperf3(rootfs: string): Promise<void> {
  const ldd = String((await execa('ldd', ['/usr/bin/iperf3'])).stdout);
  const files = ['/usr/bin/iperf3'];
  for (const line of ldd.split('\n')) {
    const m = /(?:=>\s*)?(\/\S+)\s+\(0x/.exec(line);
    if (m) files.push(m[1]!);
  }
  for (const f of files) {
    const real = String((await execa('readlink', ['-f', f])).stdout).trim();
    const dest = join(rootfs, f.replace(/^\/usr\/bin\//, '/bin/'));
    await mkdir(dirname(dest), { recursive: true });
    await copyFile(real, dest);
    if (f === '/usr/bin/iperf3' || f.includes('ld-linux')) await execa('chmod', ['0755', dest]);
  }
}

import { execa, type ResultPromise } from 'execa';
import { readFile } from 'node:fs/promises';
import { checksum, formatIp } from './packets.js';
import { waitFor } from './env.js';

/**
 * Packet capture for e2e tests: tcpdump on an interface inside a network namespace, and a check of what it
 * captured: every IPv4 header checksum and every TCP/UDP checksum (RFC 791, RFC 793 / RFC 9293 3.1, RFC 768,
 * RFC 8200 8.1 for IPv6's pseudo-header), recomputed over the whole captured packet.
 *
 * The capture sees a packet as it crosses the interface, so on a TUN it sees what the TUN's writer handed to the
 * kernel (the launcher, or wireguard-go) before anyone received it. Checksums are checked in full. A TCP segment
 * written with a virtio-net header's NEEDS_CSUM (CHECKSUM_PARTIAL: the receiver completes it) carries only the
 * pseudo-header sum in its checksum field; such a segment is counted as `partial`, not bad, and its payload is
 * not covered by any checksum here, so a test that accepts partials must check the bytes themselves (a hash of the
 * stream).
 */

/** A running tcpdump. stop() ends it (SIGINT: it flushes the file and prints its counters) and waits for it. */
export interface Capture {
  readonly file: string;
  /** End the capture; `dropped` is tcpdump's "packets dropped by kernel" (capture buffer overruns). */
  stop(): Promise<{ captured: number; dropped: number; stderr: string }>;
}

/**
 * Start `tcpdump -i IFACE -w FILE` in `netns` with BPF `filter`, whole packets, 64 MiB of kernel buffer, and
 * wait until it says it listens (the event, bounded only by `timeoutMs` as a safety net against a hang).
 */
export async function startCapture(o: { netns: string; iface: string; file: string; filter: string; timeoutMs?: number }): Promise<Capture> {
  const child: ResultPromise = execa('ip', ['netns', 'exec', o.netns, 'tcpdump', '-i', o.iface, '-w', o.file, '-U', '-s', '0', '-B', '65536', '-n', o.filter],
    { reject: false, stdout: 'ignore', stderr: 'pipe' });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  let exited = false;
  void child.finally(() => (exited = true));
  await waitFor(() => {
    if (exited) throw new Error(`tcpdump on ${o.iface} in ${o.netns} exited: ${stderr.trim()}`);
    return stderr.includes('listening on');
  }, o.timeoutMs ?? 60_000, `tcpdump on ${o.iface} in ${o.netns} to listen`);
  return {
    file: o.file,
    stop: async () => {
      child.kill('SIGINT');
      await child;
      const count = (what: string) => Number(new RegExp(`(\\d+) packets? ${what}`).exec(stderr)?.[1] ?? NaN);
      return { captured: count('captured'), dropped: count('dropped by kernel'), stderr };
    },
  };
}

/** The packets of a pcap file (link type RAW: 101, 12 or 228/229), each as captured. */
export function readPcap(buf: Buffer): Uint8Array[] {
  if (buf.length < 24) throw new Error(`not a pcap file: ${buf.length} bytes`);
  const magic = buf.readUInt32LE(0);
  const le = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  if (!le && buf.readUInt32BE(0) !== 0xa1b2c3d4 && buf.readUInt32BE(0) !== 0xa1b23c4d) throw new Error('not a pcap file: bad magic');
  const u32 = (off: number) => (le ? buf.readUInt32LE(off) : buf.readUInt32BE(off));
  const linkType = u32(20);
  if (![101, 12, 228, 229].includes(linkType)) throw new Error(`pcap link type ${linkType}: expected raw IP (a TUN)`);
  const out: Uint8Array[] = [];
  for (let off = 24; off + 16 <= buf.length;) {
    const incl = u32(off + 8);
    const orig = u32(off + 12);
    if (off + 16 + incl > buf.length) break; // a record cut short by the stop
    if (incl !== orig) throw new Error(`a packet was captured truncated (${incl} of ${orig} bytes)`);
    out.push(new Uint8Array(buf.buffer, buf.byteOffset + off + 16, incl));
    off += 16 + incl;
  }
  return out;
}

export interface ChecksumReport {
  packets: number;
  /** TCP payload bytes seen (retransmissions counted again). */
  tcpPayloadBytes: number;
  /** One line per packet with a wrong checksum (the first 20), and the count of all of them. */
  bad: string[];
  badCount: number;
  /** TCP segments whose checksum field is exactly the pseudo-header sum (CHECKSUM_PARTIAL, see above). */
  partial: number;
}

/** Check every packet of a capture: IPv4 header checksum, TCP and UDP checksums, lengths within the packet. */
export function checkChecksums(packets: readonly Uint8Array[]): ChecksumReport {
  const r: ChecksumReport = { packets: packets.length, tcpPayloadBytes: 0, bad: [], badCount: 0, partial: 0 };
  packets.forEach((p, i) => {
    const problem = packetProblem(p, (n) => (r.tcpPayloadBytes += n), () => r.partial++);
    if (problem === undefined) return;
    r.badCount++;
    if (r.bad.length < 20) r.bad.push(`packet ${i + 1} (${p.length} bytes): ${problem}`);
  });
  return r;
}

/** What is wrong with packet `p`, or undefined when its checksums hold. */
function packetProblem(p: Uint8Array, tcpPayload: (n: number) => void, partial: () => void): string | undefined {
  const v = new DataView(p.buffer, p.byteOffset, p.byteLength);
  let l4: Uint8Array;
  let pseudo: Uint8Array;
  let proto: number;
  let where: string;
  if (p[0]! >> 4 === 4 && p.length >= 20) {
    const ihl = (p[0]! & 0x0f) * 4;
    const total = v.getUint16(2);
    if (ihl < 20 || total < ihl || total > p.length) return `IPv4 lengths wrong (ihl ${ihl}, total ${total})`;
    if (checksum(p.subarray(0, ihl)) !== 0) return `IPv4 header checksum 0x${v.getUint16(10).toString(16)} is wrong`;
    if ((v.getUint16(6) & 0x3fff) !== 0) return undefined; // a fragment: its transport checksum spans the others
    proto = p[9]!;
    l4 = p.subarray(ihl, total);
    pseudo = new Uint8Array(12);
    pseudo.set(p.subarray(12, 20), 0);
    pseudo[9] = proto;
    new DataView(pseudo.buffer).setUint16(10, l4.length);
    where = `${formatIp(p.subarray(12, 16))} -> ${formatIp(p.subarray(16, 20))}`;
  } else if (p[0]! >> 4 === 6 && p.length >= 40) {
    const total = 40 + v.getUint16(4);
    if (total > p.length) return `IPv6 payload length ${total - 40} exceeds the packet`;
    proto = p[6]!; // extension headers are not followed: the streams here carry none
    l4 = p.subarray(40, total);
    pseudo = new Uint8Array(40);
    pseudo.set(p.subarray(8, 40), 0);
    new DataView(pseudo.buffer).setUint32(32, l4.length);
    pseudo[39] = proto;
    where = `${formatIp(p.subarray(8, 24))} -> ${formatIp(p.subarray(24, 40))}`;
  } else {
    return `not an IP packet (first byte 0x${(p[0] ?? 0).toString(16)})`;
  }
  if (proto === 6) {
    if (l4.length < 20) return `${where}: TCP segment of ${l4.length} bytes`;
    const dataOff = (l4[12]! >> 4) * 4;
    if (dataOff < 20 || dataOff > l4.length) return `${where}: TCP data offset ${dataOff} wrong`;
    const field = new DataView(l4.buffer, l4.byteOffset).getUint16(16);
    if (checksum(pseudo, l4) !== 0) {
      // Not complete: partial when the field is exactly the pseudo-header sum, else wrong.
      if (field !== (~checksum(pseudo) & 0xffff)) return `${where}: TCP checksum 0x${field.toString(16)} is wrong`;
      partial();
    }
    tcpPayload(l4.length - dataOff);
  } else if (proto === 17) {
    if (l4.length < 8) return `${where}: UDP datagram of ${l4.length} bytes`;
    const sum = new DataView(l4.buffer, l4.byteOffset).getUint16(6);
    if ((sum !== 0 || p[0]! >> 4 === 6) && checksum(pseudo, l4) !== 0) return `${where}: UDP checksum 0x${sum.toString(16)} is wrong`;
  }
  return undefined;
}

/** Read a capture file and check it (see checkChecksums). */
export async function checkCaptureFile(file: string): Promise<ChecksumReport> {
  return checkChecksums(readPcap(await readFile(file)));
}

/**
 * An independent DNS codec for tests (the `dns-packet` package), so the responder is checked against someone
 * else's reading of RFC 1035 rather than against its own buildQuery/parseResponse.
 */
import dnsPacket from 'dns-packet';

export type RecordTypeName = 'A' | 'AAAA' | 'MX' | 'TXT' | 'CNAME' | 'NS' | 'SOA';

/** A standard query with RD set (RFC 1035 section 4.1.1), optionally with another opcode or class. */
export function dnsQuery(id: number, name: string, type: RecordTypeName, opts: { opcode?: number; class?: 'IN' | 'CH' } = {}): Uint8Array {
  const buf = dnsPacket.encode({
    type: 'query',
    id,
    flags: dnsPacket.RECURSION_DESIRED | ((opts.opcode ?? 0) << 11),
    questions: [{ type, name, class: opts.class ?? 'IN' }],
  });
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.length);
}

export interface DecodedAnswer {
  name: string;
  type: string;
  ttl: number;
  /** An address as text for A/AAAA, else the record's data as dns-packet gives it. */
  data: unknown;
}

export interface DecodedResponse {
  id: number;
  rcode: number;
  qr: boolean;
  aa: boolean;
  tc: boolean;
  rd: boolean;
  ra: boolean;
  question: { name: string; type: string } | undefined;
  answers: DecodedAnswer[];
}

/** Decode a response; throws (as dns-packet does) when the bytes are not a DNS message. */
export function decodeDns(bytes: Uint8Array): DecodedResponse {
  const p = dnsPacket.decode(Buffer.from(bytes));
  const flags = p.flags ?? 0;
  return {
    id: p.id ?? 0,
    rcode: flags & 0xf,
    qr: p.type === 'response',
    aa: Boolean(flags & dnsPacket.AUTHORITATIVE_ANSWER),
    tc: Boolean(flags & dnsPacket.TRUNCATED_RESPONSE),
    rd: Boolean(flags & dnsPacket.RECURSION_DESIRED),
    ra: Boolean(flags & dnsPacket.RECURSION_AVAILABLE),
    question: p.questions?.[0] ? { name: p.questions[0].name, type: p.questions[0].type } : undefined,
    answers: (p.answers ?? []).map((a) => ({ name: a.name, type: a.type, ttl: 'ttl' in a ? (a.ttl ?? 0) : 0, data: 'data' in a ? a.data : undefined })),
  };
}

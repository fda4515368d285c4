/**
 * STUN (RFC 8489, formerly 5389): Binding requests and responses, pure encode/decode.
 *
 *   0                   1                   2                   3
 *   |0 0|  STUN Message Type (14)   |       Message Length          |
 *   |                 Magic Cookie = 0x2112A442                     |
 *   |                 Transaction ID (96 bits)                      |
 *   |  attributes: Type (16) | Length (16) | Value, padded to 4     |
 *
 * Used twice: against public STUN servers (server-reflexive candidates) and between lattice peers as
 * connectivity checks, ICE-style (RFC 8445 section 7.2): USERNAME "<remote ufrag>:<local ufrag>",
 * MESSAGE-INTEGRITY keyed with the responder's password, FINGERPRINT last. Decoding never throws:
 * hostile input comes back as a StunDropReason for the caller to count.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { formatIpBytes, ipToBytes, parseEndpointAddress } from '../net/addr.js';

export const MagicCookie = 0x2112a442;
export const HeaderSize = 20;
export const TransactionIdSize = 12;

export const StunMethod = { Binding: 0x001 } as const;
export const StunClass = { Request: 0b00, Indication: 0b01, SuccessResponse: 0b10, ErrorResponse: 0b11 } as const;
export type StunClass = (typeof StunClass)[keyof typeof StunClass];

export const StunAttr = {
  MappedAddress: 0x0001,
  Username: 0x0006,
  MessageIntegrity: 0x0008,
  ErrorCode: 0x0009,
  XorMappedAddress: 0x0020,
  Priority: 0x0024,
  Software: 0x8022,
  Fingerprint: 0x8028,
} as const;

export const FingerprintXor = 0x5354554e;
const MessageIntegritySize = 20;
/** Large enough for any Binding message we send or accept; bigger ones are not ours. */
export const MaxMessageSize = 1280;

export const StunDropReason = {
  TooShort: 'tooShort',
  NotStun: 'notStun', // top bits or magic cookie wrong
  BadLength: 'badLength',
  TooLarge: 'tooLarge',
  BadAttribute: 'badAttribute', // attribute runs past the end, or bad address family
  BadFingerprint: 'badFingerprint',
  AttributeAfterFingerprint: 'attributeAfterFingerprint',
} as const;
export type StunDropReason = (typeof StunDropReason)[keyof typeof StunDropReason];

export interface TransportAddress {
  address: string; // IPv4 dotted or IPv6 text
  port: number;
}

export interface StunMessage {
  method: number;
  class: StunClass;
  transactionId: Uint8Array; // 12 bytes
  xorMappedAddress?: TransportAddress;
  mappedAddress?: TransportAddress;
  username?: string;
  software?: string;
  priority?: number;
  errorCode?: { code: number; reason: string };
  /** Offset of MESSAGE-INTEGRITY in the raw message, for verifyIntegrity(). */
  integrityOffset?: number;
  hasFingerprint: boolean;
  /** The raw bytes (a view, not a copy). */
  raw: Uint8Array;
}

/** Fast test for "could be STUN": top two bits zero, length a multiple of 4, magic cookie at offset 4. */
export function looksLikeStun(b: Uint8Array): boolean {
  return (
    b.length >= HeaderSize &&
    (b[0] & 0xc0) === 0 &&
    (b[3] & 3) === 0 &&
    b[4] === 0x21 &&
    b[5] === 0x12 &&
    b[6] === 0xa4 &&
    b[7] === 0x42
  );
}

function messageType(method: number, cls: StunClass): number {
  // M11..M7 | C1 | M6..M4 | C0 | M3..M0
  return ((method & 0xf80) << 2) | ((method & 0x070) << 1) | (method & 0x00f) | ((cls & 2) << 7) | ((cls & 1) << 4);
}

function splitType(t: number): { method: number; cls: StunClass } {
  const method = ((t >> 2) & 0xf80) | ((t >> 1) & 0x070) | (t & 0x00f);
  const cls = (((t >> 7) & 2) | ((t >> 4) & 1)) as StunClass;
  return { method, cls };
}

const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: false });

export interface EncodeOptions {
  method?: number;
  class: StunClass;
  transactionId: Uint8Array;
  xorMappedAddress?: TransportAddress;
  username?: string;
  software?: string;
  priority?: number;
  /** Key for MESSAGE-INTEGRITY (short-term credential: the password's UTF-8 bytes). */
  integrityKey?: Uint8Array | string;
  fingerprint?: boolean;
}

/** Encode a STUN message. Throws only on programmer error (bad transaction id or address). */
export function encodeStun(o: EncodeOptions): Uint8Array {
  if (o.transactionId.length !== TransactionIdSize) throw new RangeError('STUN transaction id must be 12 bytes');
  const attrs: { type: number; value: Uint8Array }[] = [];
  if (o.software !== undefined) attrs.push({ type: StunAttr.Software, value: enc.encode(o.software) });
  if (o.username !== undefined) attrs.push({ type: StunAttr.Username, value: enc.encode(o.username) });
  if (o.priority !== undefined) {
    const v = new Uint8Array(4);
    new DataView(v.buffer).setUint32(0, o.priority >>> 0);
    attrs.push({ type: StunAttr.Priority, value: v });
  }
  if (o.xorMappedAddress) attrs.push({ type: StunAttr.XorMappedAddress, value: xorAddress(o.xorMappedAddress, o.transactionId) });
  let size = HeaderSize;
  for (const a of attrs) size += 4 + pad4(a.value.length);
  const miAt = size;
  if (o.integrityKey !== undefined) size += 4 + MessageIntegritySize;
  const fpAt = size;
  if (o.fingerprint) size += 8;
  const out = new Uint8Array(size);
  const dv = new DataView(out.buffer);
  dv.setUint16(0, messageType(o.method ?? StunMethod.Binding, o.class));
  dv.setUint32(4, MagicCookie);
  out.set(o.transactionId, 8);
  let off = HeaderSize;
  for (const a of attrs) {
    dv.setUint16(off, a.type);
    dv.setUint16(off + 2, a.value.length);
    out.set(a.value, off + 4);
    off += 4 + pad4(a.value.length);
  }
  if (o.integrityKey !== undefined) {
    // The length field covers the message up to and including MESSAGE-INTEGRITY (section 14.5).
    dv.setUint16(2, miAt + 4 + MessageIntegritySize - HeaderSize);
    const mac = hmac(o.integrityKey, out.subarray(0, miAt));
    dv.setUint16(miAt, StunAttr.MessageIntegrity);
    dv.setUint16(miAt + 2, MessageIntegritySize);
    out.set(mac, miAt + 4);
  }
  if (o.fingerprint) {
    dv.setUint16(2, fpAt + 8 - HeaderSize);
    dv.setUint16(fpAt, StunAttr.Fingerprint);
    dv.setUint16(fpAt + 2, 4);
    dv.setUint32(fpAt + 4, (crc32(out.subarray(0, fpAt)) ^ FingerprintXor) >>> 0);
  }
  dv.setUint16(2, size - HeaderSize);
  return out;
}

function pad4(n: number): number {
  return (n + 3) & ~3;
}

function hmac(key: Uint8Array | string, data: Uint8Array): Uint8Array {
  return createHmac('sha1', typeof key === 'string' ? enc.encode(key) : key).update(data).digest();
}

function xorAddress(a: TransportAddress, txid: Uint8Array): Uint8Array {
  // A UDP endpoint: a link-local sender's address comes with its zone (fe80::1%eth0), which the
  // attribute has no room for (RFC 8489 14.2); the address bits are sent.
  const ep = parseEndpointAddress(a.address);
  if (!ep) throw new RangeError(`not an IP address: ${a.address}`);
  const ip = ipToBytes(ep.addr);
  const v = new Uint8Array(4 + ip.length);
  v[1] = ip.length === 4 ? 0x01 : 0x02;
  v[2] = (a.port >> 8) ^ 0x21;
  v[3] = (a.port & 0xff) ^ 0x12;
  const mask = xorMask(txid);
  for (let i = 0; i < ip.length; i++) v[4 + i] = ip[i] ^ mask[i];
  return v;
}

function xorMask(txid: Uint8Array): Uint8Array {
  const m = new Uint8Array(16);
  m[0] = 0x21;
  m[1] = 0x12;
  m[2] = 0xa4;
  m[3] = 0x42;
  m.set(txid, 4);
  return m;
}

function readAddress(v: Uint8Array, xor: Uint8Array | null): TransportAddress | null {
  if (v.length < 4) return null;
  const family = v[1];
  const len = family === 0x01 ? 4 : family === 0x02 ? 16 : 0;
  if (len === 0 || v.length !== 4 + len) return null;
  let port = (v[2] << 8) | v[3];
  const ip = Uint8Array.from(v.subarray(4, 4 + len)); // a copy: Buffer#slice would alias the message
  if (xor) {
    port ^= 0x2112;
    for (let i = 0; i < len; i++) ip[i] ^= xor[i];
  }
  return { address: formatIpBytes(ip), port };
}

/** Decode a STUN message, or say why it was dropped. Checks FINGERPRINT when present. */
export function decodeStun(b: Uint8Array): StunMessage | StunDropReason {
  if (b.length < HeaderSize) return StunDropReason.TooShort;
  if (!looksLikeStun(b)) return StunDropReason.NotStun;
  if (b.length > MaxMessageSize) return StunDropReason.TooLarge;
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const len = dv.getUint16(2);
  if (len + HeaderSize !== b.length) return StunDropReason.BadLength;
  const { method, cls } = splitType(dv.getUint16(0));
  const transactionId = b.subarray(8, 20);
  const msg: StunMessage = { method, class: cls, transactionId, hasFingerprint: false, raw: b };
  let off = HeaderSize;
  let mask: Uint8Array | undefined;
  while (off < b.length) {
    if (msg.hasFingerprint) return StunDropReason.AttributeAfterFingerprint;
    if (off + 4 > b.length) return StunDropReason.BadAttribute;
    const type = dv.getUint16(off);
    const alen = dv.getUint16(off + 2);
    const vStart = off + 4;
    if (vStart + alen > b.length) return StunDropReason.BadAttribute;
    const v = b.subarray(vStart, vStart + alen);
    // After MESSAGE-INTEGRITY only FINGERPRINT counts (section 14.5); later attributes are ignored.
    const afterIntegrity = msg.integrityOffset !== undefined;
    switch (type) {
      case StunAttr.XorMappedAddress:
        if (afterIntegrity) break;
        mask ??= xorMask(transactionId);
        msg.xorMappedAddress = readAddress(v, mask) ?? undefined;
        if (!msg.xorMappedAddress) return StunDropReason.BadAttribute;
        break;
      case StunAttr.MappedAddress:
        if (afterIntegrity) break;
        msg.mappedAddress = readAddress(v, null) ?? undefined;
        if (!msg.mappedAddress) return StunDropReason.BadAttribute;
        break;
      case StunAttr.Username:
        if (!afterIntegrity) msg.username = dec.decode(v);
        break;
      case StunAttr.Software:
        if (!afterIntegrity) msg.software = dec.decode(v);
        break;
      case StunAttr.Priority:
        if (alen !== 4) return StunDropReason.BadAttribute;
        if (!afterIntegrity) msg.priority = dv.getUint32(vStart);
        break;
      case StunAttr.ErrorCode:
        if (alen < 4) return StunDropReason.BadAttribute;
        if (!afterIntegrity) msg.errorCode = { code: (v[2] & 7) * 100 + v[3], reason: dec.decode(v.subarray(4)) };
        break;
      case StunAttr.MessageIntegrity:
        if (alen !== MessageIntegritySize) return StunDropReason.BadAttribute;
        if (!afterIntegrity) msg.integrityOffset = off;
        break;
      case StunAttr.Fingerprint: {
        if (alen !== 4) return StunDropReason.BadAttribute;
        const want = (crc32(b.subarray(0, off)) ^ FingerprintXor) >>> 0;
        if (dv.getUint32(vStart) !== want) return StunDropReason.BadFingerprint;
        msg.hasFingerprint = true;
        break;
      }
      default:
        break; // unknown comprehension-optional or -required: ignored; we only speak Binding
    }
    off = vStart + pad4(alen);
  }
  if (off !== b.length) return StunDropReason.BadAttribute;
  return msg;
}

/** Check MESSAGE-INTEGRITY with `key`; false when absent or wrong. */
export function verifyIntegrity(msg: StunMessage, key: Uint8Array | string): boolean {
  const at = msg.integrityOffset;
  if (at === undefined) return false;
  const b = msg.raw;
  const copy = Uint8Array.from(b.subarray(0, at));
  // The MAC covers the header with a length field that ends at MESSAGE-INTEGRITY.
  const lenThrough = at + 4 + MessageIntegritySize - HeaderSize;
  copy[2] = lenThrough >> 8;
  copy[3] = lenThrough & 0xff;
  const mac = hmac(key, copy);
  return timingSafeEqual(mac, b.subarray(at + 4, at + 4 + MessageIntegritySize));
}

/** The mapped address a response carries: XOR-MAPPED-ADDRESS, or MAPPED-ADDRESS from RFC 3489 servers. */
export function mappedAddress(msg: StunMessage): TransportAddress | undefined {
  return msg.xorMappedAddress ?? msg.mappedAddress;
}

export function transactionKey(txid: Uint8Array): string {
  return Buffer.from(txid.buffer, txid.byteOffset, txid.byteLength).toString('hex');
}

import { describe, expect, it } from 'vitest';
import { crypto } from './helpers.js';
import {
  beginSymmetricSession,
  consumeInitiation,
  consumeResponse,
  createInitiation,
  createResponse,
  Handshake,
  HandshakeState,
  precompute,
} from '../../src/wg/noise-protocol.js';
import { marshalInitiation, marshalResponse, unmarshalInitiation, unmarshalResponse } from '../../src/wg/messages.js';
import { MessageInitiationSize, MessageResponseSize } from '../../src/wg/constants.js';

function identities(psk?: Uint8Array) {
  const mk = () => {
    const privateKey = crypto.generatePrivateKey();
    return { privateKey, publicKey: crypto.publicKey(privateKey) };
  };
  const i = mk();
  const r = mk();
  const hsI = new Handshake(r.publicKey); // initiator's view of the responder
  const hsR = new Handshake(i.publicKey);
  if (psk) {
    hsI.presharedKey = psk;
    hsR.presharedKey = psk;
  }
  precompute(crypto, i, hsI);
  precompute(crypto, r, hsR);
  return { i, r, hsI, hsR };
}

describe('Noise_IKpsk2 handshake', () => {
  for (const psk of [undefined, crypto.randomBytes(32)]) {
    it(`both sides derive the same chain key, hash and transport keys (psk=${!!psk})`, () => {
      const { i, r, hsI, hsR } = identities(psk);
      const peerR = { handshake: hsR };
      const init = createInitiation(crypto, i, hsI, 1234, Date.now())!;
      const initBytes = marshalInitiation(init);
      expect(initBytes.length).toBe(MessageInitiationSize);
      const res = consumeInitiation(crypto, r, unmarshalInitiation(initBytes)!, (pk) =>
        Buffer.from(pk).equals(Buffer.from(i.publicKey)) ? peerR : undefined, 0);
      expect('peer' in res).toBe(true);
      expect(Buffer.from(hsR.chainKey).equals(Buffer.from(hsI.chainKey))).toBe(true);
      expect(Buffer.from(hsR.hash).equals(Buffer.from(hsI.hash))).toBe(true);
      expect(hsR.remoteIndex).toBe(1234);

      const resp = createResponse(crypto, hsR, 5678)!;
      const respBytes = marshalResponse(resp);
      expect(respBytes.length).toBe(MessageResponseSize);
      expect(consumeResponse(crypto, i, hsI, unmarshalResponse(respBytes)!)).toBeNull();
      expect(hsI.state).toBe(HandshakeState.ResponseConsumed);
      expect(Buffer.from(hsR.chainKey).equals(Buffer.from(hsI.chainKey))).toBe(true);
      expect(Buffer.from(hsR.hash).equals(Buffer.from(hsI.hash))).toBe(true);

      const ki = beginSymmetricSession(crypto, hsI)!;
      const kr = beginSymmetricSession(crypto, hsR)!;
      expect(ki.isInitiator).toBe(true);
      expect(kr.isInitiator).toBe(false);
      expect(Buffer.from(ki.send).equals(Buffer.from(kr.receive))).toBe(true);
      expect(Buffer.from(ki.receive).equals(Buffer.from(kr.send))).toBe(true);
      expect(Buffer.from(ki.send).equals(Buffer.from(ki.receive))).toBe(false);
      expect(ki.remoteIndex).toBe(5678);
      expect(kr.remoteIndex).toBe(1234);
      // The handshake state is wiped once the session exists.
      expect(hsI.state).toBe(HandshakeState.Zeroed);
      expect(hsI.chainKey.every((b) => b === 0)).toBe(true);
    });
  }

  it('rejects a replayed initiation (stale TAI64N) and an initiation flood', () => {
    const { i, r, hsI, hsR } = identities();
    const peerR = { handshake: hsR };
    const lookup = () => peerR;
    const now = Date.now();
    const m1 = createInitiation(crypto, i, hsI, 1, now)!;
    expect('peer' in consumeInitiation(crypto, r, m1, lookup, 0)).toBe(true);
    expect(consumeInitiation(crypto, r, m1, lookup, 10_000)).toEqual({ error: 'staleTimestamp' });
    const m2 = createInitiation(crypto, i, hsI, 2, now + 1000)!;
    expect(consumeInitiation(crypto, r, m2, lookup, 10)).toEqual({ error: 'initiationFlood' });
    expect('peer' in consumeInitiation(crypto, r, m2, lookup, 10_000)).toBe(true);
  });
});

describe('initial chaining key and hash', () => {
  it('come from the Crypto passed in, not from whichever Crypto ran a handshake first', () => {
    const { i, hsI } = identities();
    createInitiation(crypto, i, hsI, 1, Date.now()); // another Crypto goes first
    const hashed: string[] = [];
    const spy: typeof crypto = Object.assign(Object.create(crypto) as typeof crypto, {
      hash: (...parts: Uint8Array[]) => {
        hashed.push(Buffer.concat(parts).toString('latin1'));
        return crypto.hash(...parts);
      },
    });
    const other = identities();
    createInitiation(spy, other.i, other.hsI, 2, Date.now());
    expect(hashed).toContain('Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s');
  });
});

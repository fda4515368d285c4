// Minimal typings for the parts of sodium-native that src/wg uses (the package ships none).
declare module 'sodium-native' {
  type Buf = Uint8Array;
  export function crypto_scalarmult(q: Buf, n: Buf, p: Buf): void;
  export function crypto_scalarmult_base(q: Buf, n: Buf): void;
  export function crypto_aead_chacha20poly1305_ietf_encrypt_detached(
    c: Buf, mac: Buf, m: Buf, ad: Buf | null, nsec: null, npub: Buf, k: Buf): number;
  export function crypto_aead_chacha20poly1305_ietf_decrypt_detached(
    m: Buf, nsec: null, c: Buf, mac: Buf, ad: Buf | null, npub: Buf, k: Buf): void;
  export function crypto_aead_chacha20poly1305_ietf_encrypt(
    c: Buf, m: Buf, ad: Buf | null, nsec: null, npub: Buf, k: Buf): number;
  export function crypto_aead_chacha20poly1305_ietf_decrypt(
    m: Buf, nsec: null, c: Buf, ad: Buf | null, npub: Buf, k: Buf): number;
  export function crypto_aead_xchacha20poly1305_ietf_encrypt(
    c: Buf, m: Buf, ad: Buf | null, nsec: null, npub: Buf, k: Buf): number;
  export function crypto_aead_xchacha20poly1305_ietf_decrypt(
    m: Buf, nsec: null, c: Buf, ad: Buf | null, npub: Buf, k: Buf): number;
  export function randombytes_buf(b: Buf): void;
  export function sodium_memzero(b: Buf): void;
  const _default: {
    crypto_scalarmult: typeof crypto_scalarmult;
    crypto_scalarmult_base: typeof crypto_scalarmult_base;
    crypto_aead_chacha20poly1305_ietf_encrypt_detached: typeof crypto_aead_chacha20poly1305_ietf_encrypt_detached;
    crypto_aead_chacha20poly1305_ietf_decrypt_detached: typeof crypto_aead_chacha20poly1305_ietf_decrypt_detached;
    crypto_aead_chacha20poly1305_ietf_encrypt: typeof crypto_aead_chacha20poly1305_ietf_encrypt;
    crypto_aead_chacha20poly1305_ietf_decrypt: typeof crypto_aead_chacha20poly1305_ietf_decrypt;
    crypto_aead_xchacha20poly1305_ietf_encrypt: typeof crypto_aead_xchacha20poly1305_ietf_encrypt;
    crypto_aead_xchacha20poly1305_ietf_decrypt: typeof crypto_aead_xchacha20poly1305_ietf_decrypt;
    randombytes_buf: typeof randombytes_buf;
    sodium_memzero: typeof sodium_memzero;
  };
  export default _default;
}

import { describe, expect, it } from 'vitest';
import { parseScrapeToken, scrapeAuthorized } from '../../src/metrics/index.js';

const req = (authorization?: string) => ({ headers: authorization === undefined ? {} : { authorization } });

describe('scrapeAuthorized (GET /metrics of the control plane)', () => {
  const tokens = ['scrape-token-0123456789', 'admin-token-abcdef'];
  it('accepts a bearer naming one of the tokens', () => {
    expect(scrapeAuthorized(req('Bearer scrape-token-0123456789'), tokens)).toBe(true);
    expect(scrapeAuthorized(req('bearer admin-token-abcdef'), tokens)).toBe(true);
  });
  it('refuses no header, another scheme, a prefix, a wrong token and empty tokens', () => {
    expect(scrapeAuthorized(req(), tokens)).toBe(false);
    expect(scrapeAuthorized(req('Basic scrape-token-0123456789'), tokens)).toBe(false);
    expect(scrapeAuthorized(req('Bearer scrape-token'), tokens)).toBe(false);
    expect(scrapeAuthorized(req('Bearer nope'), tokens)).toBe(false);
    expect(scrapeAuthorized(req('Bearer x'), [''])).toBe(false);
  });
  it('a token file: first line trimmed; shorter than 16 characters is a usage error', () => {
    expect(parseScrapeToken('0123456789abcdef\nignored\n', 'f')).toBe('0123456789abcdef');
    expect(() => parseScrapeToken('short\n', 'f')).toThrow(/shorter than 16/);
  });
});

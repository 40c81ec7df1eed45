import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadTlsCredentials, TlsFileError } from './tls-credentials.ts';
import { makeTestPki } from './tls-test-support.ts';
import type { TestPki } from './tls-test-support.ts';

const execFileAsync = promisify(execFile);

let tmp: string;
let pki: TestPki;

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'braid-tls-files-'));
  pki = await makeTestPki(path.join(tmp, 'pki'));
});

afterAll(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

function files(over: Partial<{ certFile: string; keyFile: string; caFile: string }> = {}) {
  return { certFile: pki.serverCert, keyFile: pki.serverKey, caFile: pki.ca, ...over };
}

async function refusal(promise: Promise<unknown>): Promise<string> {
  const err = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(TlsFileError);
  const message = (err as Error).message;
  expect(message).not.toContain('\n');
  return message;
}

describe('loadTlsCredentials', () => {
  it('loads a matching certificate, key and CA, and describes them', async () => {
    const creds = await loadTlsCredentials(files());
    expect(creds.serverSubject).toBe('CN=localhost');
    expect(creds.caSubjects).toEqual(['CN=braid test CA']);
    expect(creds.serverValidTo.getTime()).toBeGreaterThan(Date.now());
    expect(creds.key.toString()).toContain('PRIVATE KEY');
  });

  it('names the flag and the file that cannot be read', async () => {
    const missing = path.join(tmp, 'nope.pem');
    expect(await refusal(loadTlsCredentials(files({ keyFile: missing })))).toMatch(/^cannot read --tls-key .*nope\.pem: ENOENT/);
  });

  it('refuses a file without a certificate', async () => {
    const junk = path.join(tmp, 'junk.pem');
    await fs.writeFile(junk, 'not a certificate\n');
    expect(await refusal(loadTlsCredentials(files({ certFile: junk })))).toMatch(/--tls-cert .*junk\.pem: no PEM certificate/);
    expect(await refusal(loadTlsCredentials(files({ caFile: junk })))).toMatch(/--tls-ca .*junk\.pem: no PEM certificate/);
  });

  it('refuses a key that does not belong to the certificate', async () => {
    const otherKey = path.join(pki.dir, 'client-key.pem');
    expect(await refusal(loadTlsCredentials(files({ keyFile: otherKey })))).toMatch(/--tls-key .* with --tls-cert .*: .*mismatch/i);
  });

  it('refuses an encrypted key with a hint instead of OpenSSL\'s "bad decrypt"', async () => {
    const encrypted = path.join(tmp, 'encrypted-key.pem');
    await execFileAsync('openssl', ['pkey', '-in', pki.serverKey, '-aes256', '-passout', 'pass:secret', '-out', encrypted]);
    expect(await refusal(loadTlsCredentials(files({ keyFile: encrypted })))).toMatch(/--tls-key .*: the key is encrypted/);
  });

  it('refuses a key file that is not a key', async () => {
    expect(await refusal(loadTlsCredentials(files({ keyFile: pki.ca })))).toMatch(/--tls-key/);
  });

  it('refuses a CA file holding a certificate that is not a CA', async () => {
    expect(await refusal(loadTlsCredentials(files({ caFile: pki.serverCert })))).toMatch(/--tls-ca .*CN=localhost is not a CA certificate/);
  });

  it('refuses an expired or not yet valid certificate', async () => {
    const later = new Date(Date.now() + 10 * 24 * 3600 * 1000);
    expect(await refusal(loadTlsCredentials(files(), later))).toMatch(/--tls-cert .*expired on/);
    const earlier = new Date(Date.now() - 10 * 24 * 3600 * 1000);
    expect(await refusal(loadTlsCredentials(files(), earlier))).toMatch(/not valid before/);
  });
});

/**
 * The files of the NBD TLS listener: the server's certificate and key, and the CA that signs
 * the clients' certificates. They are read once, at start, and checked there (each file is PEM,
 * the key matches the certificate, the CA file holds at least one CA certificate, nothing has
 * expired), so a wrong path or a mixed-up file stops `braid serve` with one clear line instead
 * of failing the first client. Replacing the files takes a restart.
 */
import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import tls from 'node:tls';

export interface TlsFiles {
  /** PEM: the server's certificate, optionally followed by intermediates. */
  certFile: string;
  /** PEM: the server certificate's private key (unencrypted). */
  keyFile: string;
  /** PEM: the CA certificate(s) a client certificate must be signed by. */
  caFile: string;
}

/** The loaded files, ready for a tls.Server; plus what the ready log line shows of them. */
export interface TlsCredentials {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly ca: Buffer;
  /** Subject of the server certificate, e.g. "CN=node1". */
  readonly serverSubject: string;
  /** Last moment the server certificate is valid. */
  readonly serverValidTo: Date;
  /** Subjects of the trusted client CAs. */
  readonly caSubjects: readonly string[];
}

/** A TLS file that cannot be used; the message names the file and what is wrong with it. */
export class TlsFileError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TlsFileError';
  }
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

export async function loadTlsCredentials(files: TlsFiles, now: Date = new Date()): Promise<TlsCredentials> {
  const [cert, key, ca] = await Promise.all([
    readTlsFile('--tls-cert', files.certFile),
    readTlsFile('--tls-key', files.keyFile),
    readTlsFile('--tls-ca', files.caFile),
  ]);
  const serverCert = certificatesIn(cert, '--tls-cert', files.certFile)[0] as X509Certificate;
  checkValidity(serverCert, '--tls-cert', files.certFile, now);
  const cas = certificatesIn(ca, '--tls-ca', files.caFile);
  for (const caCert of cas) {
    if (!caCert.ca) throw new TlsFileError(`--tls-ca ${files.caFile}: ${subjectOf(caCert)} is not a CA certificate`);
    checkValidity(caCert, '--tls-ca', files.caFile, now);
  }
  if (key.includes('ENCRYPTED')) {
    throw new TlsFileError(`--tls-key ${files.keyFile}: the key is encrypted; give the daemon an unencrypted key readable only by it`);
  }
  try {
    // Parses the key and checks that it belongs to the certificate, as the TLS server will.
    tls.createSecureContext({ cert, key, ca });
  } catch (err) {
    throw new TlsFileError(`--tls-key ${files.keyFile} with --tls-cert ${files.certFile}: ${reasonOf(err)}`, { cause: err });
  }
  return {
    cert,
    key,
    ca,
    serverSubject: subjectOf(serverCert),
    serverValidTo: new Date(serverCert.validTo),
    caSubjects: cas.map(subjectOf),
  };
}

async function readTlsFile(flag: string, path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    throw new TlsFileError(`cannot read ${flag} ${path}: ${reasonOf(err)}`, { cause: err });
  }
}

function certificatesIn(pem: Buffer, flag: string, path: string): X509Certificate[] {
  const blocks = pem.toString('latin1').match(PEM_CERTIFICATE) ?? [];
  if (blocks.length === 0) throw new TlsFileError(`${flag} ${path}: no PEM certificate in the file`);
  return blocks.map((block, i) => {
    try {
      return new X509Certificate(block);
    } catch (err) {
      throw new TlsFileError(`${flag} ${path}: certificate ${i + 1} cannot be parsed: ${reasonOf(err)}`, { cause: err });
    }
  });
}

function checkValidity(cert: X509Certificate, flag: string, path: string, now: Date): void {
  if (now.getTime() < Date.parse(cert.validFrom)) {
    throw new TlsFileError(`${flag} ${path}: ${subjectOf(cert)} is not valid before ${cert.validFrom}`);
  }
  if (now.getTime() > Date.parse(cert.validTo)) {
    throw new TlsFileError(`${flag} ${path}: ${subjectOf(cert)} expired on ${cert.validTo}`);
  }
}

function subjectOf(cert: X509Certificate): string {
  return cert.subject.split('\n').join(', ');
}

function reasonOf(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return code !== undefined && !err.message.includes(code) ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}

/**
 * Test support for NBD over TLS: a throwaway PKI made with the `openssl` command (a CA, a
 * server certificate for 127.0.0.1 and localhost, a client certificate, and a second CA with a
 * client certificate of its own), laid out the way libnbd and QEMU look for client files, and
 * a minimal NBD client that can switch its socket to TLS after NBD_OPT_STARTTLS.
 * Test-only; nothing in the engine imports it.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { promisify } from 'node:util';
import { ExactReader } from './test-exact-reader.ts';
import { NBD_FLAG_C_FIXED_NEWSTYLE, NBD_FLAG_C_NO_ZEROES, NBD_OPTS_MAGIC, NBD_REP_MAGIC } from './protocol.ts';

const run = promisify(execFile);

export interface TestPki {
  dir: string;
  /** Server side: --tls-cert, --tls-key, --tls-ca. */
  serverCert: string;
  serverKey: string;
  ca: string;
  /**
   * Client directories with ca-cert.pem, client-cert.pem and client-key.pem (libnbd's
   * tls-certificates=DIR, QEMU's tls-creds-x509 dir=DIR,endpoint=client). All trust our CA
   * for the server's certificate; the client certificate is signed by it (`good`), by
   * another CA (`otherCa`), or missing (`noCert`).
   */
  clientDirs: { good: string; otherCa: string; noCert: string };
}

/** A client's PEM material, for node:tls. */
export interface ClientPem {
  ca: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

const SERVER_EXTENSIONS = [
  'basicConstraints=critical,CA:FALSE',
  'keyUsage=critical,digitalSignature,keyEncipherment',
  'extendedKeyUsage=serverAuth',
  'subjectAltName=IP:127.0.0.1,DNS:localhost',
];
const CLIENT_EXTENSIONS = [
  'basicConstraints=critical,CA:FALSE',
  'keyUsage=critical,digitalSignature,keyEncipherment',
  'extendedKeyUsage=clientAuth',
];

/** Makes the PKI under `dir` (created if missing). About 0.2 s: EC keys, one openssl call each. */
export async function makeTestPki(dir: string): Promise<TestPki> {
  await fs.mkdir(dir, { recursive: true });
  const p = (name: string): string => path.join(dir, name);
  await makeCa(p('ca'), 'braid test CA');
  await makeCa(p('other-ca'), 'some other CA');
  await makeLeaf(p('server'), 'localhost', p('ca'), SERVER_EXTENSIONS);
  await makeLeaf(p('client'), 'braid test client', p('ca'), CLIENT_EXTENSIONS);
  await makeLeaf(p('other-client'), 'braid test client', p('other-ca'), CLIENT_EXTENSIONS);

  const clientDir = async (name: string, caPrefix: string, leafPrefix: string | null): Promise<string> => {
    const out = p(name);
    await fs.mkdir(out, { recursive: true });
    await fs.copyFile(`${caPrefix}-cert.pem`, path.join(out, 'ca-cert.pem'));
    if (leafPrefix !== null) {
      await fs.copyFile(`${leafPrefix}-cert.pem`, path.join(out, 'client-cert.pem'));
      await fs.copyFile(`${leafPrefix}-key.pem`, path.join(out, 'client-key.pem'));
    }
    return out;
  };
  return {
    dir,
    serverCert: p('server-cert.pem'),
    serverKey: p('server-key.pem'),
    ca: p('ca-cert.pem'),
    clientDirs: {
      good: await clientDir('client-good', p('ca'), p('client')),
      otherCa: await clientDir('client-other-ca', p('ca'), p('other-client')),
      noCert: await clientDir('client-no-cert', p('ca'), null),
    },
  };
}

/** The PEM files of a client directory, for node:tls. */
export async function clientPem(clientDir: string): Promise<ClientPem> {
  const read = (name: string): Promise<Buffer | undefined> => fs.readFile(path.join(clientDir, name)).catch(() => undefined);
  const ca = await read('ca-cert.pem');
  if (ca === undefined) throw new Error(`no ca-cert.pem in ${clientDir}`);
  const cert = await read('client-cert.pem');
  const key = await read('client-key.pem');
  return { ca, ...(cert === undefined ? {} : { cert }), ...(key === undefined ? {} : { key }) };
}

async function makeCa(prefix: string, commonName: string): Promise<void> {
  await run('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', `${prefix}-key.pem`, '-out', `${prefix}-cert.pem`, '-days', '2', '-subj', `/CN=${commonName}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
}

async function makeLeaf(prefix: string, commonName: string, caPrefix: string, extensions: string[]): Promise<void> {
  await run('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', `${prefix}-key.pem`, '-out', `${prefix}-cert.pem`, '-days', '2', '-subj', `/CN=${commonName}`,
    '-CA', `${caPrefix}-cert.pem`, '-CAkey', `${caPrefix}-key.pem`,
    ...extensions.flatMap((ext) => ['-addext', ext]),
  ]);
}

// ---- Client -------------------------------------------------------------------------------

/** Exact reads over a socket that may be swapped for a TLS socket mid-stream. */
export class StartTlsClient {
  socket: net.Socket;
  /** Resolves when the current socket has closed. */
  closed: Promise<void>;
  readonly #reader = new ExactReader();

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.closed = this.#reader.attach(socket);
  }

  static connect(port: number, host = '127.0.0.1'): Promise<StartTlsClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, host);
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new StartTlsClient(socket));
      });
    });
  }

  /** Exactly `n` bytes; throws if the connection ends first. */
  read(n: number): Promise<Buffer> {
    return this.#reader.read(n);
  }

  write(data: Buffer): void {
    this.socket.write(data);
  }

  /** Reads the greeting and sends the client flags (fixed newstyle, no zeroes by default). */
  async greet(clientFlags = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES): Promise<number> {
    const greeting = await this.read(18);
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(clientFlags, 0);
    this.write(flags);
    return greeting.readUInt16BE(16);
  }

  sendOption(code: number, data: Buffer = Buffer.alloc(0)): void {
    const buf = Buffer.alloc(16 + data.length);
    buf.writeBigUInt64BE(NBD_OPTS_MAGIC, 0);
    buf.writeUInt32BE(code, 8);
    buf.writeUInt32BE(data.length, 12);
    data.copy(buf, 16);
    this.write(buf);
  }

  async readOptionReply(): Promise<{ option: number; type: number; data: Buffer }> {
    const header = await this.read(20);
    if (header.readBigUInt64BE(0) !== NBD_REP_MAGIC) throw new Error('bad option reply magic');
    return { option: header.readUInt32BE(8), type: header.readUInt32BE(12), data: await this.read(header.readUInt32BE(16)) };
  }

  /**
   * Runs the client side of the TLS handshake on the same TCP connection (call it after the
   * STARTTLS ACK). Resolves once TLS 1.3's handshake is done from the client's view; a server
   * that then refuses the certificate closes the connection afterwards.
   */
  async startTls(pem: ClientPem): Promise<void> {
    if (this.#reader.pending !== 0) throw new Error('unread plaintext before TLS');
    const raw = this.socket;
    raw.removeAllListeners('data');
    raw.removeAllListeners('end');
    raw.removeAllListeners('close');
    const secure = tls.connect({ socket: raw, servername: 'localhost', ...pem });
    this.socket = secure;
    this.closed = this.#reader.attach(secure);
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', () => {
        secure.off('error', reject);
        resolve();
      });
      secure.once('error', reject);
    });
  }

  /** Resolves once the connection has closed (whatever was left unread). */
  async waitClosed(): Promise<void> {
    await this.closed;
  }

  destroy(): void {
    this.socket.destroy();
  }


}

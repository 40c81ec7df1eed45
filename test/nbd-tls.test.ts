/**
 * NBD over TCP with TLS and client certificates, on a real `bin/braid serve --nbd-listen`,
 * with real clients: nbdinfo (libnbd, GnuTLS) over nbds://, qemu-io and qemu-img with
 * tls-creds-x509, and a node:tls client for the case GnuTLS will not produce (presenting a
 * certificate of another CA). Certificates are made with `openssl` per run. Also the
 * command-line rules: no TCP without TLS files (unless --nbd-tcp-insecure), bad files refused
 * before anything starts.
 */
import { existsSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { NBD_OPT_LIST, NBD_OPT_STARTTLS, NBD_REP_ACK, NBD_REP_SERVER } from '../engine/nbd/protocol.ts';
import { clientPem, makeTestPki, StartTlsClient } from '../engine/nbd/tls-test-support.ts';
import type { ClientPem, TestPki } from '../engine/nbd/tls-test-support.ts';
import { BRAID_BIN, Engine, MiB, cleanup, describeRun, makeTempDir, printLogsOnFailure, run } from './harness.ts';
import type { RunResult } from './harness.ts';

printLogsOnFailure();

let pki: TestPki;

beforeAll(async () => {
  pki = await makeTestPki(join(await makeTempDir('braid-pki-'), 'pki'));
  return cleanup;
});

function tlsArgs(over: Partial<Record<'--tls-cert' | '--tls-key' | '--tls-ca', string>> = {}): string[] {
  const files = { '--tls-cert': pki.serverCert, '--tls-key': pki.serverKey, '--tls-ca': pki.ca, ...over };
  return Object.entries(files).flat();
}

interface ReadyLine {
  nbdTcpAddress?: string;
  nbdTcpUriTemplate?: string;
  nbdTcpTls?: boolean;
  msg: string;
}

function readyLine(engine: Engine): ReadyLine {
  const line = readFileSync(engine.logPath, 'utf8')
    .split('\n')
    .filter((l) => l.includes('braid ready'))
    .at(-1);
  if (line === undefined) throw new Error('no ready line');
  return JSON.parse(line) as ReadyLine;
}

function logLines(engine: Engine, msg: string): Record<string, unknown>[] {
  return readFileSync(engine.logPath, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((r) => r.msg === msg);
}

function portOf(engine: Engine): number {
  const address = readyLine(engine).nbdTcpAddress;
  if (address === undefined) throw new Error('no nbdTcpAddress in the ready line');
  return Number(address.split(':').pop());
}

/** One line on stderr and exit 2, and the pool directory never created. */
async function expectUsageError(args: string[], pattern: RegExp): Promise<void> {
  const dir = join(await makeTempDir(), 'pool');
  const r = await run(BRAID_BIN, ['serve', '--data', dir, ...args]);
  expect(r.code, describeRun(BRAID_BIN, args, r)).toBe(2);
  expect(r.stderr).toMatch(pattern);
  expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
  expect(existsSync(dir)).toBe(false);
}

function qemuTlsArgs(port: number, name: string, clientDir: string): string[] {
  return [
    '--object',
    `tls-creds-x509,id=tls0,dir=${clientDir},endpoint=client`,
    '--image-opts',
    `driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=${port},export=${name},tls-creds=tls0`,
  ];
}

/** qemu-io over TLS; it exits 0 even on a pattern mismatch, so the output is checked too. */
async function qemuIoTls(port: number, name: string, commands: string[]): Promise<RunResult> {
  const args = [...qemuTlsArgs(port, name, pki.clientDirs.good), ...commands.flatMap((c) => ['-c', c])];
  const r = await run('qemu-io', args);
  const out = `${r.stdout}\n${r.stderr}`;
  if (r.code !== 0 || /Pattern verification failed|failed|error|Could not|Cannot/i.test(out)) {
    throw new Error(`qemu-io over TLS reported a problem: ${describeRun('qemu-io', args, r)}`);
  }
  return r;
}

function nbdinfo(uri: string, extra: string[] = []): Promise<RunResult> {
  return run('nbdinfo', [...extra, uri], { timeoutMs: 30_000 });
}

function nbdsUri(port: number, name: string, clientDir: string): string {
  return `nbds://127.0.0.1:${port}/${name}?tls-certificates=${clientDir}`;
}

/** A node:tls client that lists the exports over TLS, or says it was refused. */
async function nodeClientOutcome(port: number, pem: ClientPem): Promise<'in' | 'refused'> {
  const client = await StartTlsClient.connect(port);
  try {
    await client.greet();
    client.sendOption(NBD_OPT_STARTTLS);
    expect((await client.readOptionReply()).type).toBe(NBD_REP_ACK);
    await client.startTls(pem);
    client.sendOption(NBD_OPT_LIST);
    const first = await client.readOptionReply();
    return first.type === NBD_REP_SERVER || first.type === NBD_REP_ACK ? 'in' : 'refused';
  } catch {
    return 'refused';
  } finally {
    client.destroy();
    await client.waitClosed();
  }
}

describe('braid serve --nbd-listen: command line', () => {
  it('refuses TCP without the TLS files, stray TLS flags, and unusable files (exit 2, one line, nothing started)', async () => {
    await expectUsageError(['--nbd-listen', '127.0.0.1:0'], /^braid: --nbd-listen requires TLS with client certificates: missing --tls-cert, --tls-key, --tls-ca/);
    await expectUsageError(['--nbd-listen', '127.0.0.1:0', '--tls-cert', pki.serverCert], /missing --tls-key, --tls-ca/);
    await expectUsageError(['--tls-ca', pki.ca], /^braid: --tls-ca applies only with --nbd-listen/);
    await expectUsageError(['--nbd-tcp-insecure'], /--nbd-tcp-insecure applies only with --nbd-listen/);
    await expectUsageError(['--nbd-listen', '127.0.0.1:0', '--nbd-tcp-insecure', ...tlsArgs()], /--nbd-tcp-insecure turns TLS off/);
    await expectUsageError(['--nbd-listen', 'no-port', ...tlsArgs()], /invalid address "no-port"/);
    await expectUsageError(['--nbd-listen', '127.0.0.1:0', ...tlsArgs({ '--tls-key': '/nonexistent/key.pem' })], /^braid: cannot read --tls-key \/nonexistent\/key\.pem: ENOENT/);
    // The client's key with the server's certificate.
    const wrongKey = join(pki.clientDirs.good, 'client-key.pem');
    await expectUsageError(['--nbd-listen', '127.0.0.1:0', ...tlsArgs({ '--tls-key': wrongKey })], /--tls-key .* with --tls-cert/);
    const notPem = join(await makeTempDir(), 'ca.pem');
    await writeFile(notPem, 'hello\n');
    await expectUsageError(['--nbd-listen', '127.0.0.1:0', ...tlsArgs({ '--tls-ca': notPem })], /--tls-ca .*: no PEM certificate/);
  });
});

describe('braid serve --nbd-listen with TLS', () => {
  it('serves certified clients, refuses the others, and keeps serving', async () => {
    const engine = await Engine.create(['--nbd-listen', '127.0.0.1:0', ...tlsArgs()]);
    await engine.start();
    const ready = readyLine(engine);
    const port = portOf(engine);
    expect(port).toBeGreaterThan(0);
    expect(ready).toMatchObject({ nbdTcpTls: true, nbdTcpUriTemplate: `nbds://127.0.0.1:${port}/NAME` });
    expect(ready.msg).toContain(`NBD over TCP nbds://127.0.0.1:${port}/NAME (TLS, client certificate required)`);
    await engine.createVolume('vm1', '64M');

    // libnbd with a certificate signed by the CA.
    const info = await nbdinfo(nbdsUri(port, 'vm1', pki.clientDirs.good));
    expect(info.code, describeRun('nbdinfo', [], info)).toBe(0);
    expect(info.stdout).toMatch(/newstyle-fixed with TLS/);
    expect(info.stdout).toContain('export-size: 67108864');

    // QEMU writes through TLS, then a second process reads it back.
    await qemuIoTls(port, 'vm1', ['write -P 0xa7 1M 4M', 'flush']);
    const image = await run('qemu-img', ['info', '--output=json', ...qemuTlsArgs(port, 'vm1', pki.clientDirs.good)]);
    expect(image.code, describeRun('qemu-img', [], image)).toBe(0);
    expect((JSON.parse(image.stdout) as { 'virtual-size': number })['virtual-size']).toBe(64 * MiB);

    // A certified connection that stays open while others are refused.
    const steady = await StartTlsClient.connect(port);
    await steady.greet();
    steady.sendOption(NBD_OPT_STARTTLS);
    expect((await steady.readOptionReply()).type).toBe(NBD_REP_ACK);
    await steady.startTls(await clientPem(pki.clientDirs.good));

    // Refused: no certificate; a certificate from another CA (libnbd, which then sends none
    // since we name our CA in the request, and node:tls, which sends it); plain NBD.
    const noCert = await nbdinfo(nbdsUri(port, 'vm1', pki.clientDirs.noCert));
    expect(noCert.code).not.toBe(0);
    const otherCa = await nbdinfo(nbdsUri(port, 'vm1', pki.clientDirs.otherCa));
    expect(otherCa.code).not.toBe(0);
    expect(await nodeClientOutcome(port, await clientPem(pki.clientDirs.otherCa))).toBe('refused');
    const plain = await nbdinfo(`nbd://127.0.0.1:${port}/vm1`);
    expect(plain.code).not.toBe(0);
    expect(plain.stdout).not.toContain('export-size');

    // The steady connection and new certified clients still work, and the data is there.
    steady.sendOption(NBD_OPT_LIST);
    expect((await steady.readOptionReply()).type).toBe(NBD_REP_SERVER);
    steady.destroy();
    await qemuIoTls(port, 'vm1', ['read -P 0xa7 1M 4M', 'read -P 0 0 1M']);
    expect(await nodeClientOutcome(port, await clientPem(pki.clientDirs.good))).toBe('in');

    // The unix socket still speaks plain NBD.
    const unix = await nbdinfo(engine.uri('vm1'));
    expect(unix.code, describeRun('nbdinfo', [], unix)).toBe(0);
    expect(unix.stdout).toMatch(/newstyle-fixed without TLS/);

    // Each failed TLS handshake is logged once; none of it is an error of the daemon.
    const failures = logLines(engine, 'NBD TLS handshake failed; connection closed').map((f) => String(f.reason));
    expect(failures).toHaveLength(3);
    expect(failures.slice(0, 2)).toEqual([expect.stringMatching(/no certificate/), expect.stringMatching(/no certificate/)]);
    expect(logLines(engine, 'NBD client negotiating without TLS on a TLS-only listener; refusing its options')).toHaveLength(1);
    expect(engine.errorLogLines()).toEqual([]);
    expect(await engine.exitedStatus()).toBeNull();
    expect((await engine.stop()).code).toBe(0);
  });

  it('measures a 32 MiB qemu-img convert over TLS and over the unix socket (logged, not asserted)', async () => {
    const engine = await Engine.create(['--nbd-listen', '127.0.0.1:0', ...tlsArgs()]);
    await engine.start();
    const port = portOf(engine);
    await engine.createVolume('bulk', '64M');
    const source = join(await makeTempDir(), 'source.raw');
    await writeFile(source, Buffer.alloc(32 * MiB, 0x3c));
    const time = async (options: string[], target: string): Promise<number> => {
      const started = performance.now();
      const args = ['convert', ...options, '-n', '-f', 'raw', source, target];
      const r = await run('qemu-img', args);
      expect(r.code, describeRun('qemu-img', args, r)).toBe(0);
      return (performance.now() - started) / 1000;
    };
    const [, tlsObject, , tlsTarget] = qemuTlsArgs(port, 'bulk', pki.clientDirs.good) as [string, string, string, string];
    const tlsSeconds = await time(['--object', tlsObject, '--target-image-opts'], tlsTarget);
    const unixSeconds = await time(['-O', 'raw'], engine.uri('bulk'));
    console.log(`qemu-img convert 32 MiB: TLS over TCP ${(32 / tlsSeconds).toFixed(0)} MiB/s, unix socket ${(32 / unixSeconds).toFixed(0)} MiB/s`);
    await qemuIoTls(port, 'bulk', ['read -P 0x3c 0 32M']);
    expect((await engine.stop()).code).toBe(0);
  });
});

describe('braid serve --nbd-listen --nbd-tcp-insecure', () => {
  it('serves plain NBD over TCP and says so', async () => {
    const engine = await Engine.create(['--nbd-listen', '127.0.0.1:0', '--nbd-tcp-insecure']);
    await engine.start();
    const port = portOf(engine);
    expect(readyLine(engine)).toMatchObject({ nbdTcpTls: false, nbdTcpUriTemplate: `nbd://127.0.0.1:${port}/NAME` });
    expect(logLines(engine, 'NBD listening on TCP WITHOUT TLS (--nbd-tcp-insecure)')).toHaveLength(1);
    await engine.createVolume('vm2', '16M');
    const info = await nbdinfo(`nbd://127.0.0.1:${port}/vm2`);
    expect(info.code, describeRun('nbdinfo', [], info)).toBe(0);
    expect(info.stdout).toMatch(/newstyle-fixed without TLS/);
    // A client that insists on TLS is told no (NBD_REP_ERR_POLICY) and gives up.
    const tls = await nbdinfo(nbdsUri(port, 'vm2', pki.clientDirs.good));
    expect(tls.code).not.toBe(0);
    expect((await engine.stop()).code).toBe(0);
  });
});

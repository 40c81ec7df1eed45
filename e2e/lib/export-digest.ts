/**
 * SHA-256 of a whole NBD export, read by nbdcopy (libnbd: a client independent of QEMU and of
 * the engine) and streamed through the hash, so nothing of the volume's size lands on disk.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';

export function exportDigest(uri: string, timeoutMs = 120_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    const child = spawn('nbdcopy', [uri, '-'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => hash.update(chunk));
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(hash.digest('hex'));
      else reject(new Error(`nbdcopy ${uri} - failed (code ${code}, signal ${signal}): ${stderr.trim()}`));
    });
  });
}

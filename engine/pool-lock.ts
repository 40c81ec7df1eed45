/**
 * One engine per pool directory. The lock is a file holding the owner's pid, created with
 * O_EXCL; a lock whose pid is no longer alive was left by a crash (kill -9) and is taken over,
 * so a crash never prevents a restart. (A pid reused by an unrelated process would make the
 * lock look held; the message names the pid so an operator can check.)
 */
import fs from 'node:fs';
import path from 'node:path';
import { EngineError } from './errors.ts';

export const LOCK_FILE = 'braid.lock';

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export class PoolLock {
  readonly #file: string;

  private constructor(file: string) {
    this.#file = file;
  }

  static acquire(dir: string): PoolLock {
    const file = path.join(dir, LOCK_FILE);
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        fs.writeFileSync(file, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
        return new PoolLock(file);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const owner = Number.parseInt(fs.readFileSync(file, 'utf8'), 10);
      if (Number.isInteger(owner) && owner !== process.pid && isAlive(owner)) {
        throw new EngineError('FAILED_PRECONDITION', `pool ${dir} is locked: another braid engine (pid ${owner}) is serving it`);
      }
      fs.rmSync(file, { force: true });
    }
    throw new EngineError('FAILED_PRECONDITION', `pool ${dir} is locked: could not take ${file}`);
  }

  release(): void {
    fs.rmSync(this.#file, { force: true });
  }
}

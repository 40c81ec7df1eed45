import { describe, expect, it } from 'vitest';
import { UsageError } from './errors.ts';
import { parseCountArgument, parseHostPort, parseSizeArgument } from './options.ts';

describe('parseSizeArgument', () => {
  it.each([
    ['0', 0],
    ['4096', 4096],
    ['512K', 512 * 2 ** 10],
    ['512M', 512 * 2 ** 20],
    ['4G', 4 * 2 ** 30],
    ['1T', 2 ** 40],
    ['4g', 4 * 2 ** 30],
    ['4GiB', 4 * 2 ** 30],
  ])('%s is %d bytes', (text, bytes) => {
    expect(parseSizeArgument(text)).toBe(bytes);
  });

  it.each(['12X', '', '1.5G', '-1G', 'G', '1 G B', '99999999999999999999'])('%j is a usage error', (text) => {
    expect(() => parseSizeArgument(text)).toThrow(UsageError);
    expect(() => parseSizeArgument(text)).toThrow(`invalid size ${JSON.stringify(text)}: use bytes or a K/M/G/T suffix`);
  });
});

describe('parseCountArgument', () => {
  it('accepts whole numbers from 1', () => {
    expect(parseCountArgument('--max-connections', '1')).toBe(1);
    expect(parseCountArgument('--max-connections', '1024')).toBe(1024);
  });

  it.each(['0', '-1', '1.5', '', 'ten', '1e3', ' 5', '9999999999999999'])('%j is a usage error', (text) => {
    expect(() => parseCountArgument('--max-connections', text)).toThrow(UsageError);
    expect(() => parseCountArgument('--max-connections', text)).toThrow(`invalid --max-connections ${JSON.stringify(text)}`);
  });
});

describe('parseHostPort', () => {
  it('accepts host:port, [v6]:port and :port', () => {
    expect(parseHostPort('127.0.0.1:9090')).toEqual({ host: '127.0.0.1', port: 9090 });
    expect(parseHostPort('[::1]:9090')).toEqual({ host: '[::1]', port: 9090 });
    expect(parseHostPort(':9090')).toEqual({ host: '', port: 9090 });
  });

  it.each(['9090', 'localhost', 'host:99999', 'a:b', '::1:9090'])('%j is a usage error', (text) => {
    expect(() => parseHostPort(text)).toThrow(UsageError);
  });
});

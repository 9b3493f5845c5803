// Parses and resolves the --target address: HOST:PORT, [v6]:PORT or unix:PATH.
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import type { Target } from './types.js';

export class UsageError extends Error {}

const HOSTNAME = /^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$/;

function parsePort(s: string, text: string): number {
  if (!/^\d{1,5}$/.test(s) || Number(s) < 1 || Number(s) > 65535) {
    throw new UsageError(`--target: bad port in '${text}' (want 1-65535)`);
  }
  return Number(s);
}

/** Parses the text only; the host name is resolved later by resolveTarget. `https://HOST:PORT`: TLS. */
export function parseTarget(text: string): Target {
  if (text.startsWith('https://')) {
    const t = parseTarget(text.slice(8).replace(/\/$/, ''));
    if (t.kind !== 'tcp') throw new UsageError(`--target: https:// takes HOST:PORT or [v6]:PORT, got '${text}'`);
    return { ...t, tls: true };
  }
  if (text.startsWith('http://')) return parseTarget(text.slice(7).replace(/\/$/, ''));
  if (text.startsWith('unix:')) {
    const path = text.slice(5);
    if (path === '') throw new UsageError(`--target: empty unix socket path in '${text}'`);
    return { kind: 'unix', path };
  }
  const v6 = /^\[([^\]]+)\]:(.*)$/.exec(text);
  if (v6) {
    if (isIP(v6[1]!) !== 6) throw new UsageError(`--target: '${v6[1]}' is not an IPv6 address`);
    return { kind: 'tcp', host: v6[1]!, port: parsePort(v6[2]!, text), family: 6 };
  }
  const colon = text.lastIndexOf(':');
  if (colon <= 0) throw new UsageError(`--target: '${text}' is not HOST:PORT, [v6]:PORT or unix:PATH`);
  const host = text.slice(0, colon);
  if (host.includes(':')) throw new UsageError(`--target: put an IPv6 address in brackets: '[${host}]:PORT'`);
  if (!HOSTNAME.test(host)) throw new UsageError(`--target: bad host '${host}'`);
  return { kind: 'tcp', host, port: parsePort(text.slice(colon + 1), text), family: 4 };
}

/** Resolves a host name once, so that every connection goes to the same address. */
export async function resolveTarget(t: Target): Promise<Target> {
  if (t.kind === 'unix' || isIP(t.host) !== 0) {
    return t.kind === 'tcp' ? { ...t, family: isIP(t.host) === 6 ? 6 : 4 } : t;
  }
  try {
    const a = await lookup(t.host);
    return { kind: 'tcp', host: a.address, port: t.port, family: a.family === 6 ? 6 : 4, ...(t.tls ? { tls: true } : {}) };
  } catch {
    throw new UsageError(`--target: cannot resolve host '${t.host}'`);
  }
}

export function formatTarget(t: Target): string {
  if (t.kind === 'unix') return `unix:${t.path}`;
  const hp = t.family === 6 ? `[${t.host}]:${t.port}` : `${t.host}:${t.port}`;
  return t.tls ? `https://${hp}` : hp;
}

/** The Host header value for requests to this target. */
export function hostHeader(t: Target): string {
  return t.kind === 'unix' ? 'localhost' : formatTarget({ ...t, tls: false });
}

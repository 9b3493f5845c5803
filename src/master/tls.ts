/**
 * TLS material of a generation, read by the master (which may be root where the workers are not)
 * at start and at every reload: each TLS listener's certificate chain and key, checked as a pair
 * here, so that a bad or mismatched file fails the start or rolls the reload back with the file
 * named, before any worker is forked. An encrypted key is decrypted here (its passphrase from a
 * file or QUIESCE_TLS_PASSPHRASE, never the command line): workers get plain PEM over IPC, never
 * in their environment. Session ticket keys derive from a secret the master makes once, per period
 * (TICKET_PERIOD_MS): shared by every worker of every generation, so a resumed handshake works on
 * whichever worker accepts it, across reloads too, and rotated on the period.
 */
import { readFileSync, writeSync } from 'node:fs';
import { X509Certificate, createPrivateKey, randomBytes, type KeyObject } from 'node:crypto';
import { tlsFilesOf, type Config, type TlsFiles } from '../shared/config.js';
import { QuiesceError, errorMessage } from '../shared/errors.js';
import { BOARD_BYTES, BOARD_SLOTS, type TlsContextWire, type TlsWire } from '../shared/ipc.js';
import type { Native } from '../native/index.js';

/** What a generation's workers get: the contexts, which listener (by its --listen text) uses which, the ticket keys. */
export type GenerationTls = {
  /** (the ticket secret is the master's: Master.newGeneration adds it) */
  wire: Omit<TlsWire, 'ticketSecret' | 'ticketPeriodMs'>;
  /** --listen text → index in wire.contexts. */
  byText: ReadonlyMap<string, number>;
  /** One line per certificate for the log: subject, expiry, fingerprint. */
  certs: Array<{ listeners: string; subject: string; notAfter: string; fingerprint: string }>;
};

function readPem(path: string, what: string, files: TlsFiles): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new QuiesceError('CONFIG_INVALID', `${files.source}: ${what} ${path}: ${errorMessage(err)}`);
  }
}

function passphraseOf(files: TlsFiles, env: NodeJS.ProcessEnv): string | undefined {
  if (files.passphraseFile) {
    try {
      return readFileSync(files.passphraseFile, 'utf8').replace(/\r?\n$/, '');
    } catch (err) {
      throw new QuiesceError('CONFIG_INVALID', `--tls-passphrase-file ${files.passphraseFile}: ${errorMessage(err)}`);
    }
  }
  return env.QUIESCE_TLS_PASSPHRASE;
}

/** Every certificate of a PEM file (a chain, a CA bundle), each parsed; none, or one that does not parse, is an error naming `what`. */
function certificates(pem: string, what: string, files: TlsFiles): X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new QuiesceError('CONFIG_INVALID', `${files.source}: ${what}: not a PEM certificate (no BEGIN CERTIFICATE block)`);
  return blocks.map((b, i) => {
    try {
      return new X509Certificate(b);
    } catch (err) {
      throw new QuiesceError('CONFIG_INVALID', `${files.source}: ${what}: certificate ${i + 1} of the file is not a PEM certificate: ${errorMessage(err)}`);
    }
  });
}

/** Read and check one certificate/key pair; the key comes back unencrypted (PKCS#8 PEM). */
function readPair(files: TlsFiles, env: NodeJS.ProcessEnv): TlsContextWire & { x509: X509Certificate } {
  const cert = readPem(files.cert, 'certificate', files);
  const keyPem = readPem(files.key, 'key', files);
  const ca = files.ca ? readPem(files.ca, 'CA file (--tls-ca)', files) : undefined;
  let keyObject: KeyObject;
  let key: string;
  const passphrase = passphraseOf(files, env);
  try {
    keyObject = createPrivateKey({ key: keyPem, passphrase });
    key = keyObject.export({ type: 'pkcs8', format: 'pem' }).toString();
  } catch (err) {
    const encrypted = /ENCRYPTED/.test(keyPem);
    const hint = !encrypted ? '' : passphrase === undefined
      ? ' (an encrypted key: give its passphrase with --tls-passphrase-file or QUIESCE_TLS_PASSPHRASE)'
      : ' (an encrypted key: is its passphrase the right one?)';
    throw new QuiesceError('CONFIG_INVALID', `${files.source}: key ${files.key}: not a usable private key: ${errorMessage(err)}${hint}`);
  }
  // Checked with node:crypto alone, never node:tls: a secure context made here would load the TLS
  // module and the system's root store into the master for good (~1.1 MB of its RSS).
  const chain = certificates(cert, `certificate ${files.cert}`, files);
  if (ca !== undefined) certificates(ca, `CA file ${files.ca}`, files);
  const x509 = chain[0]!;
  let matches: boolean;
  try {
    matches = x509.checkPrivateKey(keyObject);
  } catch (err) {
    throw new QuiesceError('CONFIG_INVALID', `${files.source}: ${files.cert} / ${files.key}: ${errorMessage(err)}`);
  }
  if (!matches) throw new QuiesceError('CONFIG_INVALID', `${files.source}: the key ${files.key} does not belong to the certificate ${files.cert}`);
  return { cert, key, ca, x509 };
}

/** The DNS names a certificate is chosen by: its subjectAltName DNS entries, else its CN. */
function dnsNames(x509: X509Certificate): string[] {
  const san = (x509.subjectAltName ?? '').split(/,\s*/).filter((e) => e.startsWith('DNS:')).map((e) => e.slice(4).toLowerCase());
  if (san.length > 0) return san;
  const cn = /(?:^|\n)CN=([^\n]+)/.exec(x509.subject)?.[1];
  return cn && /^[*a-z0-9.-]+$/i.test(cn) ? [cn.toLowerCase()] : [];
}

/**
 * The TLS material for listeners given by their --listen text, or undefined when none is TLS.
 * Throws QuiesceError naming the flag or listen entry and the file at fault.
 */
export function readTls(cfg: Config, texts: readonly string[], env: NodeJS.ProcessEnv = process.env): GenerationTls | undefined {
  const contexts: TlsContextWire[] = [];
  const certs: GenerationTls['certs'] = [];
  const byText = new Map<string, number>();
  const byFiles = new Map<string, number>();
  for (const text of texts) {
    const files = tlsFilesOf(cfg, text);
    if (!files) continue;
    const k = JSON.stringify([files.cert, files.key, files.ca, files.passphraseFile, files.sni]);
    let i = byFiles.get(k);
    if (i === undefined) {
      const { x509, ...ctx } = readPair(files, env);
      const more = (files.sni ?? []).map((f) => {
        const pair = readPair({ ...f, ca: '', source: `${files.source} "sni"` }, env);
        const names = dnsNames(pair.x509);
        if (names.length === 0) throw new QuiesceError('CONFIG_INVALID', `${files.source} "sni": certificate ${f.cert} names no DNS name (subjectAltName DNS: or CN) to be chosen by`);
        return { names, cert: pair.cert, key: pair.key, x509: pair.x509 };
      });
      i = contexts.push({ ...ctx, ...(more.length ? { sni: more.map(({ names, cert, key }) => ({ names, cert, key })) } : {}) }) - 1;
      byFiles.set(k, i);
      certs.push({ listeners: text, subject: x509.subject.replace(/\n/g, ', '), notAfter: x509.validTo, fingerprint: x509.fingerprint256 });
      for (const m of more) certs.push({ listeners: `${text} (sni ${m.names.join(' ')})`, subject: m.x509.subject.replace(/\n/g, ', '), notAfter: m.x509.validTo, fingerprint: m.x509.fingerprint256 });
    } else {
      const c = certs[i];
      if (c) c.listeners += `,${text}`;
    }
    byText.set(text, i);
  }
  if (contexts.length === 0) return undefined;
  return { wire: { contexts, http2: cfg.http2 === 'on' }, byText, certs };
}

/**
 * How long one set of session ticket keys encrypts new tickets: 12 hours (Caddy's rotation; a
 * ticket's lifetime is Node's default 300 s session timeout, so one period outlives every ticket
 * it issued by far). Node's tls.Server holds one key set at a time (setTicketKeys). OpenSSL's ticket
 * key callback, which could keep the previous key for decryption, reaches JavaScript only through an
 * undocumented internal of the secure context (`enableTicketKeyCallback`/`onticketkeycallback`), a
 * call into JS for every ticket issued or read: not used, as it costs every handshake for the ~0.7%
 * of tickets issued in the last 300 s before a rotation, which get a full handshake after it, never
 * an error.
 * QUIESCE_TLS_TICKET_PERIOD_MS overrides it (the tests rotate in seconds).
 */
export const TICKET_PERIOD_MS = 12 * 3600 * 1000;

export function ticketPeriodMs(env: NodeJS.ProcessEnv = process.env): number {
  const v = env.QUIESCE_TLS_TICKET_PERIOD_MS;
  if (v === undefined || v === '') return TICKET_PERIOD_MS;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1000) throw new QuiesceError('CONFIG_INVALID', `QUIESCE_TLS_TICKET_PERIOD_MS: want a whole number of milliseconds >= 1000, got ${JSON.stringify(v)}`);
  return n;
}

/** The secret the ticket keys of every period derive from (32 random bytes, base64), made once per master. */
export function newTicketSecret(): string {
  return randomBytes(32).toString('base64');
}

/**
 * The TLS load board: one 32-bit cell per worker in memory shared by the master and every worker
 * (a memfd in their stdio, mapped by each worker), where a worker writes how many TLS connections
 * it holds (handshakes, HTTP/2 sessions, HTTP/1.1 over TLS) and reads its peers' before it accepts
 * (worker/tls.ts PacedAccept: the busiest steps back). -1: not serving (not started yet, retiring,
 * exited). Made once, for the master's life; a generation gets one half (two run at most at once),
 * set to -1 when the generation starts; the master writes -1 in the cell of a worker that exited
 * (a crashed one's last count must not hold its peers back).
 */
export class TlsBoard {
  private constructor(readonly fd: number) {}

  static open(native: Native): TlsBoard {
    return new TlsBoard(native.memfd('quiesce-tls-board', BOARD_BYTES));
  }

  /** A new generation's half, every cell -1. */
  half(generation: number, workers: number): { fd: number; base: number; slots: number } {
    const base = (generation % 2) * BOARD_SLOTS;
    writeSync(this.fd, Buffer.alloc(BOARD_SLOTS * 4, 0xff), 0, BOARD_SLOTS * 4, base * 4);
    return { fd: this.fd, base, slots: Math.min(workers, BOARD_SLOTS) };
  }

  /** The cell of a worker that exited: -1. */
  clear(cell: number): void {
    writeSync(this.fd, Buffer.alloc(4, 0xff), 0, 4, cell * 4);
  }
}

/** The admin listener's certificate and key (--admin-tls-cert/--admin-tls-key), read and checked as a pair; undefined without them. */
export function readAdminTls(cfg: Config, env: NodeJS.ProcessEnv = process.env): { cert: string; key: string } | undefined {
  if (cfg.adminTlsCert === '') return undefined;
  const { cert, key } = readPair({ cert: cfg.adminTlsCert, key: cfg.adminTlsKey, ca: '', passphraseFile: cfg.tlsPassphraseFile, source: '--admin-tls-cert/--admin-tls-key' }, env);
  return { cert, key };
}

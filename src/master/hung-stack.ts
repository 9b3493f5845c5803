/**
 * Reading the JavaScript stack of a worker whose event loop is blocked (issue 14 item 3). Its own
 * code cannot run, but V8 can be interrupted from another thread: SIGUSR1 makes Node start the
 * inspector on its own thread (the worker runs with --inspect-port=0: a free port on 127.0.0.1,
 * which it prints on its stderr, where the master reads it: WorkerProc.inspectorUrl), and the
 * inspector's messages reach the isolate as interrupts, so `Debugger.pause` stops even a
 * `while (true) {}` and the `Debugger.paused` event carries the call frames. A minimal WebSocket
 * client (RFC 6455: the handshake, masked text frames out, unmasked frames in) is enough for the
 * few messages; the master has no WebSocket dependency.
 *
 * The inspector executes code for whoever connects: it is opened only for a worker that does not
 * run as root, on loopback, for the moment of the capture, and the worker is killed right after.
 */
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import type { WorkerProc } from './workers.js';
import type { Logger } from '../shared/log.js';

/** The whole capture (inspector start, connect, pause) is given at most this long. */
export const STACK_CAPTURE_MS = 3_000;

type Frame = { functionName: string; url: string; location: { scriptId: string; lineNumber: number; columnNumber: number } };

/** Whether the stack of this worker may be read: not when it runs as root (see the header). */
export function mayCapture(workerUser: string): string | undefined {
  const root = process.getuid?.() === 0 && (workerUser === '' || workerUser === 'root' || workerUser === '0');
  return root ? 'the worker runs as root: its inspector would be open to every local user' : undefined;
}

/** What the paused worker said: its stack, its requests in flight and its open connections (worker.ts INFLIGHT_PROBE). */
export type HungView = { stack: string; inflight?: number; connections?: number; request?: string };

/** The blocked worker's stack, innermost first (`at fn (file:line:col)` lines), and what it serves; or undefined. */
export async function captureStack(w: WorkerProc, log: Logger): Promise<HungView | undefined> {
  const why = mayCapture(w.generation.boot.config.user);
  if (why) { log.notice('worker-hung-stack', { pid: w.pid, stack: 'not read', note: why }); return undefined; }
  const until = Date.now() + STACK_CAPTURE_MS;
  try {
    if (!w.inspectorUrl) w.child?.kill('SIGUSR1');
    while (!w.inspectorUrl && Date.now() < until && w.alive) await sleep(20);
    if (!w.inspectorUrl) throw new Error('the inspector did not start');
    const { frames, probe } = await pausedFrames(w.inspectorUrl, until - Date.now());
    const stack = frames.map((f) => `at ${f.functionName || '<anonymous>'} (${f.url || '<internal>'}:${f.location.lineNumber + 1}:${f.location.columnNumber + 1})`).join('\n');
    let seen: { inflight?: number; connections?: number; current?: { method: string; path: string } } = {};
    try { seen = JSON.parse(probe ?? '{}') as typeof seen; } catch { /* not read */ }
    return { stack, inflight: seen.inflight, connections: seen.connections, request: seen.current ? `${seen.current.method} ${seen.current.path}` : undefined };
  } catch (err) {
    log.warn('worker-hung-stack', { pid: w.pid, stack: 'not read', error: err instanceof Error ? err.message : String(err) });
    return undefined;
  }
}

/**
 * Connect to the inspector at `url` (ws://127.0.0.1:PORT/ID), pause, and return the call frames
 * and what the worker's INFLIGHT_PROBE answers (evaluated while paused).
 */
function pausedFrames(url: string, ms: number): Promise<{ frames: Frame[]; probe?: string }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(u.port), u.hostname);
    const timer = setTimeout(() => done(new Error(`no paused event within ${ms} ms`)), Math.max(1, ms));
    let frames: Frame[] | undefined;
    const scripts = new Map<string, string>();
    const done = (err: Error | undefined, probe?: string): void => {
      clearTimeout(timer);
      socket.destroy();
      if (err && !frames) reject(err); else resolve({ frames: frames ?? [], probe });
    };
    socket.on('error', (err) => done(err));
    socket.on('connect', () => {
      socket.write(`GET ${u.pathname} HTTP/1.1\r\nHost: ${u.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    });
    let buf = Buffer.alloc(0);
    let upgraded = false;
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (!upgraded) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        if (!/^HTTP\/1\.1 101/.test(buf.subarray(0, end).toString())) return done(new Error('the inspector refused the connection'));
        upgraded = true;
        buf = buf.subarray(end + 4);
        send(socket, { id: 1, method: 'Debugger.enable' });
        send(socket, { id: 2, method: 'Debugger.pause' });
      }
      for (;;) {
        const f = readFrame(buf);
        if (!f) return;
        buf = buf.subarray(f.size);
        if (f.opcode !== 1) continue;
        const m = JSON.parse(f.payload.toString()) as { id?: number; method?: string; params?: { callFrames?: Frame[]; scriptId?: string; url?: string }; result?: { result?: { value?: unknown } } };
        // frames name their script by id (their url is often empty): the enable lists every script first
        if (m.method === 'Debugger.scriptParsed' && m.params?.scriptId) scripts.set(m.params.scriptId, m.params.url ?? '');
        if (m.method === 'Debugger.paused' && !frames) {
          frames = (m.params?.callFrames ?? []).map((fr) => ({ ...fr, url: fr.url || scripts.get(fr.location.scriptId) || '' }));
          send(socket, { id: 3, method: 'Runtime.evaluate', params: { expression: `globalThis[Symbol.for('quiesce.inflight')]?.()`, returnByValue: true } });
        }
        if (m.id === 3) return done(undefined, typeof m.result?.result?.value === 'string' ? m.result.result.value : undefined);
      }
    });
  });
}

/** A masked text frame, as a client must send. */
function send(socket: net.Socket, message: object): void {
  const payload = Buffer.from(JSON.stringify(message));
  const mask = randomBytes(4);
  const len = payload.length;
  const head = len < 126 ? Buffer.from([0x81, 0x80 | len]) : Buffer.from([0x81, 0x80 | 126, len >> 8, len & 0xff]);
  const body = Buffer.alloc(len);
  for (let i = 0; i < len; i++) body[i] = payload[i]! ^ mask[i % 4]!;
  socket.write(Buffer.concat([head, mask, body]));
}

/** One server frame from the start of `b` (unmasked), or undefined until it is whole. */
function readFrame(b: Buffer): { opcode: number; payload: Buffer; size: number } | undefined {
  if (b.length < 2) return undefined;
  let len = b[1]! & 0x7f;
  let off = 2;
  if (len === 126) { if (b.length < 4) return undefined; len = b.readUInt16BE(2); off = 4; }
  else if (len === 127) { if (b.length < 10) return undefined; len = Number(b.readBigUInt64BE(2)); off = 10; }
  if (b.length < off + len) return undefined;
  return { opcode: b[0]! & 0x0f, payload: b.subarray(off, off + len), size: off + len };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Wrapping user request/upgrade handlers so that nothing they throw escapes into the worker core.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { RequestListener, UpgradeListener } from './app-types.js';

/** Where an app error surfaced, and the request it broke when there is one. */
export type ErrorSink = (err: unknown, where: string, req?: IncomingMessage) => void;

/** Calls the sink, swallowing anything the sink itself throws. */
export function report(onError: ErrorSink, err: unknown, where: string, req?: IncomingMessage): void {
  try {
    onError(err, where, req);
  } catch {
    // the error reporter failed: nothing sensible is left to do with it
  }
}

/**
 * Ends `res` with a plain-text error, or destroys it when the status line already went out.
 * Never throws.
 */
export function failResponse(res: ServerResponse, status = 500, text = 'Internal Server Error', headers?: Record<string, string>): void {
  try {
    if (res.writableEnded || res.destroyed) return;
    if (res.headersSent) {
      res.destroy();
      return;
    }
    for (const name of res.getHeaderNames()) res.removeHeader(name);
    const body = `${text}\n`;
    res.statusCode = status;
    for (const [k, v] of Object.entries(headers ?? {})) res.setHeader(k, v);
    res.setHeader('Content-Type', 'text/plain; charset=utf-8');
    res.setHeader('Content-Length', Buffer.byteLength(body));
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.end(res.req?.method === 'HEAD' ? undefined : body);
  } catch {
    try {
      res.destroy();
    } catch {
      // nothing left to try
    }
  }
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function';
}

/**
 * A listener that never throws: a synchronous throw, or a rejection of a promise the listener
 * returns (async listeners), answers 500 and is reported to `onError` with `where`.
 */
export function guardListener(fn: (req: IncomingMessage, res: ServerResponse) => unknown, onError: ErrorSink, where = 'request'): RequestListener {
  return (req, res) => {
    let ret: unknown;
    try {
      ret = fn(req, res);
    } catch (err) {
      report(onError, err, where, req);
      failResponse(res);
      return;
    }
    if (isThenable(ret)) {
      Promise.resolve(ret).catch((err: unknown) => {
        report(onError, err, where, req);
        failResponse(res);
      });
    }
  };
}

/** An upgrade handler that never throws: a throw destroys the socket and is reported. */
export function guardUpgrade(fn: (req: IncomingMessage, socket: Duplex, head: Buffer) => unknown, onError: ErrorSink): UpgradeListener {
  return (req, socket, head) => {
    try {
      const ret = fn(req, socket, head);
      if (isThenable(ret)) {
        Promise.resolve(ret).catch((err: unknown) => {
          report(onError, err, 'upgrade', req);
          socket.destroy();
        });
      }
    } catch (err) {
      report(onError, err, 'upgrade', req);
      socket.destroy();
    }
  };
}

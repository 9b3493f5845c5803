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

/** The duck type of a fetch Response (undici's, or a framework's own): a numeric status, headers with get(), a body reader. */
function isResponseLike(v: unknown): boolean {
  if (typeof v !== 'object' || v === null) return false;
  const r = v as { status?: unknown; headers?: { get?: unknown } | null; arrayBuffer?: unknown };
  return typeof r.status === 'number' && typeof r.headers?.get === 'function' && typeof r.arrayBuffer === 'function';
}

/**
 * A function taken as a Node listener that returns a Response (or a promise of one) is a fetch
 * handler declaring two parameters (`async (request, env) => new Response(…)`): left alone its
 * request would hang. The request is answered 500 and `why` (what to change) is reported as an
 * app error, which the worker logs once per interval.
 */
export function refuseResponse(fn: (req: IncomingMessage, res: ServerResponse) => unknown, why: string, onError: ErrorSink): (req: IncomingMessage, res: ServerResponse) => unknown {
  const refuse = (req: IncomingMessage, res: ServerResponse): void => {
    const err = new Error(why);
    err.stack = ''; // quiesce's own frames would only mislead: the message says it all
    report(onError, err, 'request', req);
    if (!res.headersSent) failResponse(res, 500, 'Internal Server Error: the app returned a fetch Response from a Node listener (see the server log)');
  };
  return (req, res) => {
    const ret = fn(req, res);
    if (ret === undefined) return ret; // a listener's usual answer: one compare
    if (isResponseLike(ret)) return refuse(req, res);
    if (isThenable(ret)) return Promise.resolve(ret).then((v) => { if (isResponseLike(v)) refuse(req, res); });
    return ret;
  };
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

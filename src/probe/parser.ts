// A small exact HTTP/1.x response parser: it tells whether a response is complete,
// and how many bytes arrived, so that a reset or EOF can be judged precisely.

export interface ParsedResponse {
  status: number;
  version: '1.0' | '1.1';
  /** Lower-cased names; repeated headers joined with ", ". */
  headers: Map<string, string>;
  bodyBytes: number;
  /** The connection may carry another request after this response. */
  reusable: boolean;
}

export type ParseResult =
  | { state: 'partial' }
  | { state: 'complete'; response: ParsedResponse; extraBytes: number }
  | { state: 'error'; code: string };

const MAX_HEAD = 64 * 1024;
const MAX_LINE = 4 * 1024;
const STATUS_LINE = /^HTTP\/1\.([01]) (\d{3})(?: [^\r\n]*)?$/;
const HEADER_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*$/;
const CRLF = Buffer.from('\r\n');
const HEAD_END = Buffer.from('\r\n\r\n');

type Phase =
  | { p: 'head' }
  | { p: 'length'; left: number }
  | { p: 'chunk-size' }
  | { p: 'chunk-data'; left: number }
  | { p: 'chunk-crlf' }
  | { p: 'trailer' }
  | { p: 'eof' }
  | { p: 'done' }
  | { p: 'error'; code: string };

function tokens(v: string | undefined): string[] {
  return (v ?? '').toLowerCase().split(',').map((s) => s.trim()).filter(Boolean);
}

export class ResponseParser {
  /** Every response byte received so far, including 1xx responses. */
  bytes = 0;
  private buf: Buffer = Buffer.alloc(0);
  private phase: Phase = { p: 'head' };
  private head: Omit<ParsedResponse, 'bodyBytes' | 'reusable'> | null = null;
  private bodyBytes = 0;
  /** No length and not chunked: the body ends when the connection does. */
  private readToEof = false;

  constructor(private readonly method = 'GET') {}

  push(chunk: Buffer): ParseResult {
    this.bytes += chunk.length;
    if (this.phase.p === 'done' || this.phase.p === 'error') return this.result(chunk.length);
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    this.run();
    return this.result(this.buf.length);
  }

  /** The peer closed its side. */
  end(): ParseResult {
    const p = this.phase.p;
    if (p === 'eof') {
      this.bodyBytes += this.buf.length;
      this.buf = Buffer.alloc(0);
      this.phase = { p: 'done' };
      return this.result(0);
    }
    if (p === 'done' || p === 'error') return this.result(0);
    return { state: 'error', code: 'EOF' };
  }

  /** extraBytes: bytes left over after a complete response. */
  private result(extraBytes: number): ParseResult {
    if (this.phase.p === 'error') return { state: 'error', code: this.phase.code };
    if (this.phase.p !== 'done' || !this.head) return { state: 'partial' };
    const conn = tokens(this.head.headers.get('connection'));
    const reusable =
      !conn.includes('close') && (this.head.version === '1.1' || conn.includes('keep-alive')) && !this.readToEof;
    return { state: 'complete', response: { ...this.head, bodyBytes: this.bodyBytes, reusable }, extraBytes };
  }

  private fail(code: string): void {
    this.phase = { p: 'error', code };
  }

  /** Takes one CRLF-terminated line from the buffer, or null if not all there yet. */
  private line(max: number): string | null {
    const i = this.buf.indexOf(CRLF);
    if (i < 0) {
      if (this.buf.length > max) this.fail('EPARSE_LINE_TOO_LONG');
      return null;
    }
    const s = this.buf.subarray(0, i).toString('latin1');
    this.buf = this.buf.subarray(i + 2);
    return s;
  }

  private run(): void {
    for (;;) {
      const ph = this.phase;
      switch (ph.p) {
        case 'head': {
          const i = this.buf.indexOf(HEAD_END);
          if (i < 0) {
            if (this.buf.length > MAX_HEAD) this.fail('EPARSE_HEAD_TOO_LARGE');
            return;
          }
          const text = this.buf.subarray(0, i).toString('latin1');
          this.buf = this.buf.subarray(i + 4);
          this.startBody(text);
          break;
        }
        case 'length': {
          const n = Math.min(ph.left, this.buf.length);
          this.bodyBytes += n;
          this.buf = this.buf.subarray(n);
          if (ph.left - n > 0) {
            this.phase = { p: 'length', left: ph.left - n };
            return;
          }
          this.phase = { p: 'done' };
          break;
        }
        case 'chunk-size': {
          const l = this.line(MAX_LINE);
          if (l === null) return;
          const m = /^([0-9A-Fa-f]{1,12})[ \t]*(?:;.*)?$/.exec(l);
          if (!m) return this.fail('EPARSE_CHUNK');
          const size = parseInt(m[1]!, 16);
          this.phase = size === 0 ? { p: 'trailer' } : { p: 'chunk-data', left: size };
          break;
        }
        case 'chunk-data': {
          const n = Math.min(ph.left, this.buf.length);
          this.bodyBytes += n;
          this.buf = this.buf.subarray(n);
          if (ph.left - n > 0) {
            this.phase = { p: 'chunk-data', left: ph.left - n };
            return;
          }
          this.phase = { p: 'chunk-crlf' };
          break;
        }
        case 'chunk-crlf': {
          if (this.buf.length < 2) return;
          if (this.buf[0] !== 13 || this.buf[1] !== 10) return this.fail('EPARSE_CHUNK');
          this.buf = this.buf.subarray(2);
          this.phase = { p: 'chunk-size' };
          break;
        }
        case 'trailer': {
          const l = this.line(MAX_HEAD);
          if (l === null) return;
          if (l === '') this.phase = { p: 'done' };
          break;
        }
        case 'eof':
          this.bodyBytes += this.buf.length;
          this.buf = Buffer.alloc(0);
          return;
        case 'done':
        case 'error':
          return;
      }
    }
  }

  /** Parses a response head and picks the body framing (RFC 9112 section 6.3). */
  private startBody(text: string): void {
    const lines = text.split('\r\n');
    const m = STATUS_LINE.exec(lines[0]!);
    if (!m) return this.fail('EPARSE_STATUS');
    const status = Number(m[2]);
    const headers = new Map<string, string>();
    for (const l of lines.slice(1)) {
      const h = HEADER_LINE.exec(l);
      if (!h) return this.fail('EPARSE_HEADER');
      const name = h[1]!.toLowerCase();
      const prev = headers.get(name);
      headers.set(name, prev === undefined ? h[2]! : `${prev}, ${h[2]}`);
    }
    if (status >= 100 && status < 200) {
      if (status === 101) return this.fail('EPARSE_UPGRADE');
      return; // informational: the real response follows
    }
    this.head = { status, version: m[1] === '1' ? '1.1' : '1.0', headers };
    const te = tokens(headers.get('transfer-encoding'));
    const cl = headers.get('content-length');
    if (this.method === 'HEAD' || status === 204 || status === 304) {
      this.phase = { p: 'done' };
    } else if (te.length > 0) {
      if (te[te.length - 1] === 'chunked') this.phase = { p: 'chunk-size' };
      else this.toEof();
    } else if (cl !== undefined) {
      const values = new Set(cl.split(',').map((s) => s.trim()));
      const v = values.size === 1 ? [...values][0]! : '';
      if (!/^\d{1,15}$/.test(v)) return this.fail('EPARSE_LENGTH');
      this.phase = Number(v) === 0 ? { p: 'done' } : { p: 'length', left: Number(v) };
    } else {
      this.toEof();
    }
  }

  private toEof(): void {
    this.readToEof = true;
    this.phase = { p: 'eof' };
  }
}

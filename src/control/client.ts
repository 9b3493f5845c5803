/** The CLI's end of the control socket: send one verb to the running master and wait for its outcome. */
import net from 'node:net';
import { createInterface } from 'node:readline';
import { controlSocketPath, type ControlReply, type ControlRequest } from '../shared/control-protocol.js';
import { QuiesceError } from '../shared/errors.js';
import { isAlive, readPid } from '../master/pidfile.js';

export type ControlResult = Extract<ControlReply, { type: 'result' }>;

/** Send a request; `onProgress` sees progress lines. Rejects with NOT_RUNNING when nothing answers. */
export function sendControl(pidfile: string, req: ControlRequest, onProgress: (m: string) => void = () => {}, timeoutMs = 0): Promise<ControlResult> {
  const path = controlSocketPath(pidfile);
  return new Promise((resolve, reject) => {
    const socket = net.connect(path);
    let result: ControlResult | undefined;
    const timer = timeoutMs > 0 ? setTimeout(() => { socket.destroy(); reject(new QuiesceError('CONTROL_FAILED', `no answer from the server within ${timeoutMs} ms`)); }, timeoutMs) : undefined;
    socket.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const pid = readPid(pidfile);
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') {
        const stale = pid ? `; the pid file ${pidfile} names ${pid}, which is not running` : '';
        reject(new QuiesceError('NOT_RUNNING', pid && isAlive(pid)
          ? `pid ${pid} in ${pidfile} is alive but its control socket ${path} does not answer`
          : err.code === 'ENOENT'
            ? `quiesce is not running (no control socket ${path}${stale})`
            : `quiesce is not running (nothing answers on the control socket ${path}: a master that was killed left it${stale})`));
      } else {
        reject(new QuiesceError('CONTROL_FAILED', `control socket ${path}: ${err.message}`));
      }
    });
    socket.on('connect', () => {
      socket.write(JSON.stringify(req) + '\n');
      createInterface({ input: socket }).on('line', (line) => {
        const r = parseReply(line);
        if (!r) {
          clearTimeout(timer);
          socket.destroy();
          reject(new QuiesceError('CONTROL_FAILED', `control socket ${path}: not a quiesce master's answer: ${JSON.stringify(line.slice(0, 80))}`));
        } else if (r.type === 'progress') onProgress(r.message);
        else result = r;
      });
    });
    socket.on('close', () => {
      clearTimeout(timer);
      if (result) resolve(result);
      else reject(new QuiesceError('CONTROL_FAILED', 'the server closed the control connection without an answer (did it exit?)'));
    });
  });
}

/** One line from the master, or undefined when it is not one of its replies. */
function parseReply(line: string): ControlReply | undefined {
  try {
    const r = JSON.parse(line) as unknown;
    if (!r || typeof r !== 'object') return undefined;
    const t = (r as { type?: unknown }).type;
    if (t === 'progress' && typeof (r as { message?: unknown }).message === 'string') return r as ControlReply;
    return t === 'result' ? (r as ControlReply) : undefined;
  } catch {
    return undefined;
  }
}

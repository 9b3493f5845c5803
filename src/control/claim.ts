/** A second instance on the same pid file refuses to start and names the pid; a stale pid file is taken over. */
import { QuiesceError } from '../shared/errors.js';
import { isAlive, readPid } from '../master/pidfile.js';
import { sendControl } from './client.js';

export async function claimPidfile(pidfile: string): Promise<void> {
  const pid = readPid(pidfile);
  if (pid === undefined || pid === process.pid || !isAlive(pid)) return;
  try {
    const r = await sendControl(pidfile, { verb: 'ping' }, () => {}, 2_000);
    if (r.ok) throw new QuiesceError('ALREADY_RUNNING', `already running as pid ${pid} (pid file ${pidfile}); stop it first or use another --pidfile`);
  } catch (err) {
    if (err instanceof QuiesceError && err.code === 'ALREADY_RUNNING') throw err;
    // a live pid that does not answer on the control socket: a reused pid, not ours
  }
}

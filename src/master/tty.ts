/**
 * Whether the process still has a controlling terminal. A terminal that is closed hangs up: the
 * kernel detaches it from every process of its session (opening /dev/tty then fails with ENXIO)
 * and sends SIGHUP. A master that had a terminal at start and has none at a SIGHUP was not asked to
 * reload: its terminal went away, and it stops gracefully, as a foreground server is expected to.
 */
import { closeSync, openSync } from 'node:fs';

export function hasControllingTty(): boolean {
  try {
    closeSync(openSync('/dev/tty', 'r'));
    return true;
  } catch {
    return false;
  }
}

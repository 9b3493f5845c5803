import { constants } from 'node:os';

/** errno number → name ('EPERM'), first name wins for aliases (EAGAIN before EWOULDBLOCK). */
const ERRNO_NAMES: ReadonlyMap<number, string> = (() => {
  const names = new Map<number, string>();
  for (const [name, num] of Object.entries(constants.errno)) {
    if (!names.has(num)) names.set(num, name);
  }
  return names;
})();

export function errnoName(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? `ERRNO_${errno}`;
}

/** A failed system call: `code` is the errno name ('EPERM'), `errno` its number. */
export class NativeError extends Error {
  readonly code: string;
  readonly errno: number;
  readonly syscall: string;

  constructor(syscall: string, errno: number, detail?: string) {
    const code = errnoName(errno);
    super(`${syscall} failed: ${code} (errno ${errno})${detail === undefined ? '' : `: ${detail}`}`);
    this.name = 'NativeError';
    this.code = code;
    this.errno = errno;
    this.syscall = syscall;
  }
}

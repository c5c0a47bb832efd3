/**
 * SQLite files readable by this user only, whatever the umask: the directory is created 0700 and the
 * database file 0600 before SQLite opens it, because SQLite would create it 0644 minus the umask, and gives
 * the -wal, -shm and -journal files it creates later the mode of the database file.
 */
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, statSync } from 'node:fs';
import { dirname } from 'node:path';

export function preparePrivateDatabaseFile(file: string): void {
  if (file === ':memory:') return;
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  closeSync(openSync(file, 'a', 0o600));
  // Files an earlier version left open to the group or others are closed to them now.
  for (const path of [file, `${file}-wal`, `${file}-shm`]) {
    if (existsSync(path) && (statSync(path).mode & 0o077) !== 0) chmodSync(path, 0o600);
  }
}

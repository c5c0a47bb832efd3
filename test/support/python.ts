/**
 * A Python virtual environment with pinned packages, for tests that drive the gateway with a Python client.
 *
 * The venv is built once per requirements file (and Python version) under
 * `$XDG_CACHE_HOME/medblock-test/` (or `~/.cache/medblock-test/`) and reused afterwards. It is built in a
 * temporary directory beside its final place and renamed there in one step, so that concurrent test runs
 * never see, or corrupt, a half-built one. Like the engines (see engines.ts), a missing python3 or a failed
 * install fails the tests under MEDBLOCK_REQUIRE_SERVICES=1 and skips them, with the reason, otherwise.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, join } from 'node:path';
import { describe } from 'node:test';
import { promisify } from 'node:util';

const run = promisify(execFile);
/** Written last into a finished venv: a directory without it was never completed. */
const COMPLETE = '.medblock-complete';

export type PythonEnv = { python: string } | { missing: string };

function cacheRoot(): string {
  return join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'medblock-test');
}

async function pythonVersion(): Promise<string> {
  const { stdout, stderr } = await run('python3', ['--version']);
  return (stdout || stderr).trim();
}

/** The venv's interpreter: `python -m ...` finds the venv through its own location, so a renamed venv still works. */
const interpreter = (venv: string) => join(venv, 'bin', 'python');

async function build(dir: string, requirements: string): Promise<void> {
  await run('python3', ['-m', 'venv', dir]);
  await run(interpreter(dir), ['-m', 'pip', 'install', '--disable-pip-version-check', '--no-input', '-q', '-r', requirements], {
    timeout: 5 * 60_000,
    maxBuffer: 16 * 1024 * 1024,
  });
  writeFileSync(join(dir, COMPLETE), '');
}

/**
 * The interpreter of a cached venv (`<name>-<hash>`) holding exactly `requirements` (a pip requirements
 * file with every version pinned), built if needed.
 */
export async function pythonWith(name: string, requirements: string): Promise<PythonEnv> {
  let version: string;
  try {
    version = await pythonVersion();
  } catch (e) {
    return { missing: `python3 is not on PATH (${(e as Error).message.split('\n')[0]})` };
  }
  const hash = createHash('sha256').update(version).update('\0').update(readFileSync(requirements)).digest('hex').slice(0, 16);
  const root = cacheRoot();
  const venv = join(root, `${name}-${hash}`);
  if (existsSync(join(venv, COMPLETE))) return { python: interpreter(venv) };

  mkdirSync(root, { recursive: true });
  const staging = mkdtempSync(join(root, '.building-'));
  try {
    await build(staging, requirements);
    try {
      renameSync(staging, venv);
    } catch (e) {
      // Another run finished first (the target exists and is not empty): use its venv, drop ours.
      if (!existsSync(join(venv, COMPLETE))) throw e;
    }
    return { python: interpreter(venv) };
  } catch (e) {
    const err = e as Error & { stderr?: string };
    const detail = (err.stderr || err.message).trim().split('\n').slice(-3).join(' ');
    return { missing: `could not build a Python venv with ${basename(requirements)} (python3 -m venv and pip install): ${detail}` };
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
}

/** `describe` that runs only when `env` has an interpreter (see the module comment). */
export function describeWithPython(env: PythonEnv, name: string, fn: (python: string) => void): void {
  if ('python' in env) {
    describe(name, () => fn(env.python));
  } else if (process.env.MEDBLOCK_REQUIRE_SERVICES === '1') {
    describe(name, () => {
      throw new Error(`${env.missing}; MEDBLOCK_REQUIRE_SERVICES=1: python3 with venv and pip is required`);
    });
  } else {
    describe.skip(`${name} — SKIPPED: ${env.missing} (install python3 with venv; MEDBLOCK_REQUIRE_SERVICES=1 makes this a failure)`, () => {});
  }
}

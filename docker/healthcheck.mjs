// Container health probe for the gateway image (slim images have no curl):
//   node /app/docker/healthcheck.mjs [path]   (default /healthz; the compose file uses /readyz)
// GETs http://127.0.0.1:$PORT<path> and exits 0 on a 2xx answer, 1 otherwise (status or error on stderr).
const path = process.argv[2] ?? '/healthz';
const port = process.env.PORT || '8080';

try {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(4000) });
  if (!res.ok) {
    process.stderr.write(`${path}: HTTP ${res.status}\n`);
    process.exit(1);
  }
} catch (e) {
  process.stderr.write(`${path}: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
}

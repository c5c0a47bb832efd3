/**
 * The public FHIR base URL of a request when MEDBLOCK_BASE_URL is unset. `Location` headers, `fullUrl`s and
 * paging links are built from it, so it never comes from a Host an arbitrary client chose: a direct request's
 * Host must name the address the gateway listens on, and Forwarded / X-Forwarded-Host / X-Forwarded-Proto
 * count only when the connection comes from a trusted proxy (MEDBLOCK_TRUSTED_PROXIES).
 */
import type { Request } from 'express';
import { errors } from '../fhir/outcome.ts';

export interface BaseUrlOptions {
  /** The configured listen host and port (port 0: whichever port the connection arrived on). */
  listen?: { host: string; port: number };
  /** Whether the peer at `address` is a trusted proxy (express's compiled `trust proxy` setting). */
  trusted: (address: string, hop: number) => boolean;
}

/** A host name or an IP literal, with an optional port (group 1: the name, group 2: the port). */
const HOST = /^((?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*|\[[0-9a-f:.]+\])(?::(\d{1,5}))?$/i;
const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '[::1]'];
const WILDCARDS = ['0.0.0.0', '::', '[::]'];

/** An address as it appears in a Host header: IPv6 in brackets, IPv4-mapped IPv6 as plain IPv4. */
function hostForm(address: string): string {
  const v4 = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
  if (v4) return v4;
  return address.includes(':') && !address.startsWith('[') ? `[${address}]` : address;
}

/** True when `host` names this gateway: a loopback name, the configured host, or the address the connection reached. */
function namesThisGateway(host: string, req: Request, opts: BaseUrlOptions): boolean {
  const m = HOST.exec(host);
  if (!m) return false;
  const port = m[2] === undefined ? 80 : Number(m[2]);
  if (port !== (opts.listen?.port || req.socket.localPort)) return false;
  const names = new Set(LOOPBACK_NAMES);
  const configured = opts.listen?.host.toLowerCase();
  if (configured && !WILDCARDS.includes(configured)) names.add(hostForm(configured));
  if (req.socket.localAddress) names.add(hostForm(req.socket.localAddress.toLowerCase()));
  return names.has(m[1].toLowerCase());
}

/** The last value of a comma-separated header: the one the proxy nearest the gateway wrote. */
function lastValue(header: string | undefined): string | undefined {
  return header?.split(',').at(-1)?.trim() || undefined;
}

/** `host` and `proto` of the last element of an RFC 7239 Forwarded header. */
function forwardedElement(header: string | undefined): { host?: string; proto?: string } {
  const element: Record<string, string> = {};
  for (const pair of lastValue(header)?.split(';') ?? []) {
    const eq = pair.indexOf('=');
    if (eq > 0) element[pair.slice(0, eq).trim().toLowerCase()] = pair.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1');
  }
  return { host: element.host, proto: element.proto };
}

/** `proto://host/fhir` for this request; 400 when the Host does not name this gateway (the Host is not echoed). */
export function publicBaseUrl(req: Request, opts: BaseUrlOptions): string {
  if (opts.trusted(req.socket.remoteAddress ?? '', 0)) {
    const forwarded = forwardedElement(req.get('Forwarded'));
    const host = forwarded.host ?? lastValue(req.get('X-Forwarded-Host')) ?? req.get('Host');
    const proto = (forwarded.proto ?? lastValue(req.get('X-Forwarded-Proto')) ?? 'http').toLowerCase();
    if (!host || !HOST.test(host) || (proto !== 'http' && proto !== 'https')) {
      throw errors.badRequest('the proxy forwarded a host that is not a host name or a protocol that is not http or https');
    }
    return `${proto}://${host}${req.baseUrl}`;
  }
  const host = req.get('Host');
  if (!host || !namesThisGateway(host, req, opts)) {
    throw errors.badRequest(
      'the Host header does not name this gateway (misdirected request); behind a proxy, set MEDBLOCK_BASE_URL or MEDBLOCK_TRUSTED_PROXIES',
    );
  }
  return `http://${host}${req.baseUrl}`;
}

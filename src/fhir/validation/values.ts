// Fixed and pattern values (ElementDefinition.fixed[x] / pattern[x]), compared on JSON values where a
// LosslessNumber equals the number it spells.
import { isLosslessNumber } from './primitives.ts';

function scalar(v: unknown): unknown {
  return isLosslessNumber(v) ? Number(v.value) : v;
}

/** fixed[x]: the value must be exactly this (no extra properties, same array items). */
export function equalsFixed(value: unknown, fixed: unknown): boolean {
  value = scalar(value);
  fixed = scalar(fixed);
  if (typeof fixed !== 'object' || fixed === null) return value === fixed;
  if (typeof value !== 'object' || value === null) return false;
  if (Array.isArray(fixed)) {
    if (!Array.isArray(value) || value.length !== fixed.length) return false;
    return fixed.every((f, i) => equalsFixed(value[i], f));
  }
  if (Array.isArray(value)) return false;
  const a = value as Record<string, unknown>;
  const b = fixed as Record<string, unknown>;
  const keys = Object.keys(b);
  if (Object.keys(a).length !== keys.length) return false;
  return keys.every((k) => equalsFixed(a[k], b[k]));
}

/** pattern[x]: everything in the pattern must be in the value; array items match any value item. */
export function matchesPattern(value: unknown, pattern: unknown): boolean {
  value = scalar(value);
  pattern = scalar(pattern);
  if (typeof pattern !== 'object' || pattern === null) return value === pattern;
  if (typeof value !== 'object' || value === null) return false;
  if (Array.isArray(pattern)) {
    if (!Array.isArray(value)) return false;
    return pattern.every((p) => value.some((v) => matchesPattern(v, p)));
  }
  const a = value as Record<string, unknown>;
  const b = pattern as Record<string, unknown>;
  return Object.keys(b).every((k) => matchesPattern(a[k], b[k]));
}

// Invariants (ElementDefinition.constraint with severity "error").
//
// fhirpath.js costs roughly 5–70 µs per evaluation, more than our whole budget for a resource, so an
// invariant is decided in the cheapest way that gives the same answer:
//  1. absent inputs: when none of the elements an expression mentions is present in the context node,
//     the result is the one computed once on an empty node (e.g. dom-2 "contained.contained.empty()"
//     on a resource without contained). Only for expressions that cannot see anything else
//     (no %resource, $this, children(), descendants(), ...);
//  2. a hand-written equivalent for a few invariants that are everywhere (native-invariants.ts), or,
//     for expressions that only test which children are present ("low.exists() or text.exists()"),
//     a JavaScript predicate compiled from the expression (presence-expressions.ts);
//  3. otherwise fhirpath.js, compiled once per expression and run after the walk (so LosslessNumber
//     values can be converted to plain numbers for it first, and only when there are any).
// Expressions that throw count as passed; `stats` (exported as invariantStats) counts them.
import fhirpath from 'fhirpath';
import r4 from 'fhirpath/fhir-context/r4';
import type { Constraint } from '@medplum/core';
import { DELIBERATE_DIFFERENCES, nativeInvariant, type NativeCheck } from './native-invariants.ts';
import { compilePresenceExpression, type PresencePredicate } from './presence-expressions.ts';
import { isLosslessNumber } from './primitives.ts';
import type { CompiledType } from './schema.ts';

/** Constraints we do not evaluate with FHIRPath, and why. */
const SKIPPED: Record<string, string> = {
  'ele-1': 'covered structurally: empty objects, arrays and strings are rejected by the walker',
  'ext-1': 'covered structurally: the walker checks value[x] xor extension on every Extension',
  'txt-1': 'fhirpath.js has no htmlChecks(): the xhtml primitive check enforces it (xhtml.ts)',
  'txt-2': 'fhirpath.js has no htmlChecks(): the xhtml primitive check enforces it (xhtml.ts)',
};

export interface Invariant {
  key: string;
  /** The constraint's human description (from the definitions, not the data). */
  human: string;
  expression: string;
  /** FHIRPath base: the type or backbone path the constraint is defined on. */
  base: string;
  /** Profile that added this invariant, if any. */
  profile: string | undefined;
  native: NativeCheck | undefined;
  /** Keys whose absence lets us use `whenAbsent`; null when that shortcut is not sound. */
  presenceKeys: string[] | null | undefined;
  /** The expression compiled to JavaScript when it only tests presence of children; null if not. */
  presence: PresencePredicate | null | undefined;
  whenAbsent: boolean | undefined;
  evaluate: ((node: unknown, env: Record<string, unknown>) => unknown[]) | undefined;
}

export interface InvariantEnv {
  resource: unknown;
  rootResource: unknown;
}

export function compileInvariants(
  constraints: readonly Constraint[] | undefined,
  base: string,
  profile?: string,
): Invariant[] {
  const out: Invariant[] = [];
  for (const c of constraints ?? []) {
    if (c.severity !== 'error' || c.key in SKIPPED) continue;
    // Needs the referenced resources, which a single-resource validator does not have.
    if (c.expression.includes('resolve()')) continue;
    out.push({
      key: c.key,
      human: c.description,
      expression: c.expression,
      base,
      profile,
      native: nativeInvariant(c.key, c.expression),
      presenceKeys: undefined,
      presence: undefined,
      whenAbsent: undefined,
      evaluate: undefined,
    });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Static analysis for the "absent inputs" shortcut

const KEYWORDS = new Set(['and', 'or', 'xor', 'implies', 'div', 'mod', 'in', 'contains', 'is', 'as', 'true', 'false']);
/** Functions whose result depends on more than the named child elements of the context. */
const CONTEXT_FUNCTIONS = new Set([
  'children',
  'descendants',
  'hasValue',
  'today',
  'now',
  'timeOfDay',
  'resolve',
  'htmlChecks',
  'htmlChecks2',
  'conformsTo',
  'memberOf',
  'getValue',
]);
const ROOT_TYPE_NAMES = new Set(['Resource', 'DomainResource', 'Element', 'BackboneElement']);
/** Methods that evaluate their argument once per input item (never on an empty input). */
const LAMBDA_FUNCTIONS = new Set(['where', 'select', 'all', 'exists', 'repeat']);

interface Analysis {
  identifiers: Set<string>;
  contextDependent: boolean;
}

/**
 * The child elements an expression reads from its context node, and whether it can see anything
 * else (%resource, $this, children(), ...). Conservative: when in doubt, context dependent.
 * `$this` and variables inside the argument of a lambda method (x.where(...), x.all(...)) are fine:
 * that argument is only evaluated when `x`, which is rooted in the context, is non-empty.
 */
export function analyseExpression(expression: string, base: string): Analysis {
  const identifiers = new Set<string>();
  let contextDependent = false;
  const frames: boolean[] = []; // per open parenthesis: is it a lambda method's argument list?
  const inLambda = (): boolean => frames.includes(true);
  const n = expression.length;
  const readWord = (start: number): number => {
    let j = start;
    while (j < n && /[A-Za-z0-9_]/.test(expression[j])) j++;
    return j;
  };
  let i = 0;
  while (i < n) {
    const c = expression[i];
    if (c === "'") {
      i++;
      while (i < n && expression[i] !== "'") i += expression[i] === '\\' ? 2 : 1;
      i++;
    } else if (c === '`') {
      const end = expression.indexOf('`', i + 1);
      identifiers.add(expression.slice(i + 1, end));
      i = end + 1;
    } else if (c === '%') {
      const end = readWord(i + 1);
      if (expression.slice(i + 1, end) !== 'ucum' && !inLambda()) contextDependent = true;
      i = end;
    } else if (c === '$') {
      if (!inLambda()) contextDependent = true;
      i = readWord(i + 1);
    } else if (c === '@') {
      i++;
      while (i < n && /[0-9T:\-.+Z]/.test(expression[i])) i++;
    } else if (/[A-Za-z_]/.test(c)) {
      const end = readWord(i);
      const word = expression.slice(i, end);
      let k = end;
      while (k < n && expression[k] === ' ') k++;
      // "a.b": only `a` is read from the context node; `b` is read from what `a` returned.
      let p = i - 1;
      while (p >= 0 && expression[p] === ' ') p--;
      const afterDot = p >= 0 && expression[p] === '.';
      if (expression[k] === '(') {
        if (CONTEXT_FUNCTIONS.has(word)) contextDependent = true;
        if (word === 'extension' && !afterDot) identifiers.add('extension');
        frames.push(afterDot && LAMBDA_FUNCTIONS.has(word));
        i = k + 1;
        continue;
      }
      if (!KEYWORDS.has(word) && !afterDot) identifiers.add(word);
      i = end;
    } else if (/[0-9]/.test(c)) {
      while (i < n && /[0-9.]/.test(expression[i])) i++;
    } else {
      if (c === '(') frames.push(false);
      else if (c === ')') frames.pop();
      i++;
    }
  }
  // A leading type name ("Appointment.status") selects the context node itself.
  const typeName = base.split('.')[0];
  for (const id of identifiers) {
    if (id === typeName || ROOT_TYPE_NAMES.has(id)) contextDependent = true;
  }
  return { identifiers, contextDependent };
}

/** The JSON keys of `fields` an identifier can read: the key itself, its "_key", choice variants. */
export function presenceKeysFor(identifiers: Iterable<string>, fields: Map<string, { name: string }>): string[] {
  const keys = new Set<string>();
  for (const id of identifiers) {
    for (const [key, field] of fields) {
      if (key === id || key === '_' + id || field.name === id + '[x]') keys.add(key);
    }
  }
  return [...keys];
}

// ---------------------------------------------------------------------------------------------
// FHIRPath evaluation

const noTrace = (): void => {};

function compiled(inv: Invariant): (node: unknown, env: Record<string, unknown>) => unknown[] {
  if (inv.evaluate === undefined) {
    inv.evaluate = fhirpath.compile({ base: inv.base, expression: inv.expression }, r4 as never, {
      traceFn: noTrace,
    } as never) as (node: unknown, env: Record<string, unknown>) => unknown[];
  }
  return inv.evaluate;
}

export const stats = {
  fhirpathEvaluations: 0,
  nativeDecisions: 0,
  absentShortcuts: 0,
  /** Expressions that threw (treated as passed), in total and per constraint key. */
  expressionErrors: 0,
  expressionErrorsByKey: new Map<string, number>(),
  /** Per constraint key, how often fhirpath.js had to run (to find candidates for natives). */
  fhirpathByKey: new Map<string, number>(),
  /** Cross-check mode: shortcut/native answers that disagreed with fhirpath.js. */
  crossCheckMismatches: [] as { key: string; location: string; expected: boolean; fhirpath: boolean }[],
};

let crossCheck = false;

/** Test hook: also run fhirpath.js for every invariant decided by a shortcut, and compare. */
export function setInvariantCrossCheck(on: boolean): void {
  crossCheck = on;
}

/** true = passes, false = fails, undefined = must be evaluated with fhirpath.js. */
export function decideWithoutFhirpath(
  inv: Invariant,
  node: unknown,
  contextType: CompiledType | undefined,
  env: InvariantEnv,
): boolean | undefined {
  if (contextType !== undefined && typeof node === 'object' && node !== null) {
    if (inv.presenceKeys === undefined) prepareShortcuts(inv, contextType);
    const keys = inv.presenceKeys;
    if (keys != null) {
      let present = false;
      for (let i = 0; i < keys.length; i++) {
        if ((node as Record<string, unknown>)[keys[i]] !== undefined) {
          present = true;
          break;
        }
      }
      if (!present) {
        stats.absentShortcuts++;
        return inv.whenAbsent;
      }
    }
    if (inv.presence != null) {
      stats.nativeDecisions++;
      return inv.presence(node as Record<string, unknown>);
    }
  }
  if (inv.native !== undefined) {
    const result = inv.native(node, env);
    if (result !== undefined) stats.nativeDecisions++;
    return result;
  }
  return undefined;
}

/** Works out, once per invariant, which shortcuts are sound for its context type. */
function prepareShortcuts(inv: Invariant, contextType: CompiledType): void {
  const keysOf = (name: string): string[] => presenceKeysFor([name], contextType.fields);
  inv.presence = inv.native === undefined ? (compilePresenceExpression(inv.expression, keysOf) ?? null) : null;
  inv.presenceKeys = null;
  const analysis = analyseExpression(inv.expression, inv.base);
  if (analysis.contextDependent) return;
  const empty = contextType.isResource ? { resourceType: contextType.name } : {};
  const result = runFhirpath(inv, empty, { resource: empty, rootResource: empty });
  if (result === undefined) return;
  inv.whenAbsent = result;
  inv.presenceKeys = presenceKeysFor(analysis.identifiers, contextType.fields);
}

/**
 * Evaluates with fhirpath.js; undefined when the expression throws. Only an explicit `false` fails:
 * an empty result means the rule did not apply (ref-1 on a Reference without `reference` evaluates
 * to empty, as does ras-2 on a prediction without a probability).
 */
function runFhirpath(inv: Invariant, node: unknown, env: InvariantEnv): boolean | undefined {
  try {
    const result = compiled(inv)(node, env as unknown as Record<string, unknown>);
    return !(result.length === 1 && result[0] === false);
  } catch {
    stats.expressionErrors++;
    stats.expressionErrorsByKey.set(inv.key, (stats.expressionErrorsByKey.get(inv.key) ?? 0) + 1);
    return undefined;
  }
}

export interface PendingInvariant {
  inv: Invariant;
  node: unknown;
  env: InvariantEnv;
  location: string;
  /** Cross-check mode: the answer a shortcut gave, to compare with fhirpath.js. */
  expected: boolean | undefined;
}

export function shouldCrossCheck(): boolean {
  return crossCheck;
}

/**
 * Runs the invariants deferred during a walk. fhirpath.js must see plain numbers, so when the
 * resource holds LosslessNumbers we evaluate on a converted copy.
 */
export function evaluatePending(
  pending: PendingInvariant[],
  root: unknown,
  hasLosslessNumbers: boolean,
  fail: (item: PendingInvariant) => void,
): void {
  const copies = hasLosslessNumbers ? new Map<unknown, unknown>() : undefined;
  if (copies !== undefined) plainCopy(root, copies);
  const view = (v: unknown): unknown => {
    if (copies === undefined) return v;
    if (isLosslessNumber(v)) return Number(v.value);
    return copies.get(v) ?? v;
  };
  for (const item of pending) {
    const env = { resource: view(item.env.resource), rootResource: view(item.env.rootResource) };
    stats.fhirpathEvaluations++;
    stats.fhirpathByKey.set(item.inv.key, (stats.fhirpathByKey.get(item.inv.key) ?? 0) + 1);
    const result = runFhirpath(item.inv, view(item.node), env);
    if (item.expected !== undefined) {
      if (result !== undefined && result !== item.expected && !(item.inv.key in DELIBERATE_DIFFERENCES)) {
        stats.crossCheckMismatches.push({
          key: item.inv.key,
          location: item.location,
          expected: item.expected,
          fhirpath: result,
        });
      }
      continue;
    }
    if (result === false) fail(item);
  }
}

/** Deep copy with LosslessNumbers as numbers; records original → copy for every object. */
function plainCopy(value: unknown, copies: Map<unknown, unknown>): unknown {
  if (isLosslessNumber(value)) return Number(value.value);
  if (typeof value !== 'object' || value === null) return value;
  let copy: unknown;
  if (Array.isArray(value)) {
    copy = value.map((v) => plainCopy(v, copies));
  } else {
    const out: Record<string, unknown> = {};
    for (const key in value) out[key] = plainCopy((value as Record<string, unknown>)[key], copies);
    copy = out;
  }
  copies.set(value, copy);
  return copy;
}

// Many R4 invariants only ask which child elements are present, e.g.
//   "low.exists() or high.exists() or text.exists()"          (obs-3)
//   "code.empty() or system.exists()"                          (qty-3)
//   "(component.empty() and related.empty()) or value.exists()" (...)
// Those are compiled here into plain JavaScript: `name.exists()` / `name.empty()` (optionally
// `.not()`), combined with and / or / xor / implies and parentheses. exists() and empty() always
// yield a boolean, so two-valued logic is exact. Anything else is left to fhirpath.js.

type Obj = Record<string, unknown>;
export type PresencePredicate = (node: Obj) => boolean;

type Token = { kind: 'name'; name: string; test: 'exists' | 'empty'; negated: boolean } | { kind: 'op'; op: string };

const TERM = /^([A-Za-z][A-Za-z0-9]*)\.(exists|empty)\(\)(\.not\(\))?/;
const OPERATOR = /^(and|or|xor|implies)\b/;

function tokenize(expression: string): Token[] | undefined {
  const tokens: Token[] = [];
  let rest = expression.trim();
  while (rest.length > 0) {
    let m: RegExpExecArray | null;
    if (rest[0] === '(' || rest[0] === ')') {
      tokens.push({ kind: 'op', op: rest[0] });
      rest = rest.slice(1);
    } else if ((m = OPERATOR.exec(rest)) !== null) {
      tokens.push({ kind: 'op', op: m[1] });
      rest = rest.slice(m[0].length);
    } else if ((m = TERM.exec(rest)) !== null) {
      tokens.push({ kind: 'name', name: m[1], test: m[2] as 'exists' | 'empty', negated: m[3] !== undefined });
      rest = rest.slice(m[0].length);
    } else {
      return undefined;
    }
    rest = rest.trimStart();
  }
  return tokens;
}

/**
 * Compiles a presence-only expression, or returns undefined if it is not one. `keysOf(name)` gives
 * the JSON keys that make element `name` present (value, "_name", choice variants).
 */
export function compilePresenceExpression(
  expression: string,
  keysOf: (name: string) => string[],
): PresencePredicate | undefined {
  const tokens = tokenize(expression);
  if (tokens === undefined) return undefined;
  let pos = 0;
  const peekOp = (): string | undefined => {
    const t = tokens[pos];
    return t?.kind === 'op' ? t.op : undefined;
  };

  // Precedence (FHIRPath): implies < or, xor < and.
  const parseImplies = (): PresencePredicate | undefined => {
    let left = parseOr();
    while (left !== undefined && peekOp() === 'implies') {
      pos++;
      const a = left;
      const b = parseOr();
      if (b === undefined) return undefined;
      left = (n) => !a(n) || b(n);
    }
    return left;
  };
  const parseOr = (): PresencePredicate | undefined => {
    let left = parseAnd();
    while (left !== undefined && (peekOp() === 'or' || peekOp() === 'xor')) {
      const op = peekOp();
      pos++;
      const a = left;
      const b = parseAnd();
      if (b === undefined) return undefined;
      left = op === 'or' ? (n) => a(n) || b(n) : (n) => a(n) !== b(n);
    }
    return left;
  };
  const parseAnd = (): PresencePredicate | undefined => {
    let left = parsePrimary();
    while (left !== undefined && peekOp() === 'and') {
      pos++;
      const a = left;
      const b = parsePrimary();
      if (b === undefined) return undefined;
      left = (n) => a(n) && b(n);
    }
    return left;
  };
  const parsePrimary = (): PresencePredicate | undefined => {
    const t = tokens[pos++];
    if (t === undefined) return undefined;
    if (t.kind === 'op') {
      if (t.op !== '(') return undefined;
      const inner = parseImplies();
      if (tokens[pos]?.kind !== 'op' || (tokens[pos] as { op: string }).op !== ')') return undefined;
      pos++;
      return inner;
    }
    const keys = keysOf(t.name);
    const wantPresent = (t.test === 'exists') !== t.negated;
    return (n) => {
      let present = false;
      for (let i = 0; i < keys.length; i++) {
        if (n[keys[i]] !== undefined) {
          present = true;
          break;
        }
      }
      return present === wantPresent;
    };
  };

  const predicate = parseImplies();
  return predicate !== undefined && pos === tokens.length ? predicate : undefined;
}

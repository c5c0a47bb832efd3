// The validator proper: one recursive walk over the JSON tree, driven by compiled types.
//
// Hot-path rules: no closures, regexes or strings are created for valid data. Locations live on a
// stack and become strings only when an issue is reported; invariants that need fhirpath.js are
// queued and run once the walk is over.
import { satisfiesBinding } from './bindings.ts';
import { isConcreteResourceType } from './definitions.ts';
import {
  decideWithoutFhirpath,
  evaluatePending,
  shouldCrossCheck,
  type Invariant,
  type InvariantEnv,
  type PendingInvariant,
} from './invariants.ts';
import { LocationStack, MAX_ISSUES, safePropertyName, type IssueCode, type ValidationIssue } from './issues.ts';
import { hasJsonKind, isLosslessNumber } from './primitives.ts';
import { profileTypesFor } from './profiles.ts';
import { checkReference } from './references.ts';
import { compiledType, fieldType, type CompiledType, type Field } from './schema.ts';
import { equalsFixed, matchesPattern } from './values.ts';
import { checkNarrativeXhtml } from './xhtml.ts';

type Obj = Record<string, unknown>;

/** How a resource sits in the tree: contained resources share their container's %rootResource. */
export type ResourceRole = 'root' | 'contained' | 'entry';

/** A JSON object (not an array, not a number kept as a LosslessNumber). */
function isObject(value: unknown): value is Obj {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !isLosslessNumber(value);
}

function isEmptyObject(value: Obj): boolean {
  for (const _ in value) return false;
  return true;
}

function profileNote(profile: string | undefined): string {
  return profile === undefined ? '' : ` (profile ${profile})`;
}

export class Walker {
  readonly issues: ValidationIssue[] = [];
  readonly location = new LocationStack();
  private readonly pending: PendingInvariant[] = [];
  private env: InvariantEnv = { resource: undefined, rootResource: undefined };
  /** Set when a LosslessNumber was seen: fhirpath.js then needs a converted copy. */
  private sawLosslessNumber = false;
  /** Set when a resource was walked against several profiles: issues may repeat. */
  private mayRepeatIssues = false;
  /** Warnings and information past MAX_ISSUES, counted but not listed. */
  private unlisted = 0;
  /** Set by an error past MAX_ISSUES: the walk unwinds without looking further. */
  private stopped = false;

  report(severity: ValidationIssue['severity'], code: IssueCode, message: string, expression?: string): void {
    if (this.issues.length < MAX_ISSUES) {
      this.issues.push({ severity, code, message, expression: expression ?? this.location.toString() });
    } else if (severity === 'error') {
      this.stopped = true;
    } else {
      this.unlisted++;
    }
  }

  /** Entry point for the root resource; `extraProfiles` come from $validate?profile=. */
  validateRoot(resource: unknown, extraProfiles: CompiledType[] | undefined): ValidationIssue[] {
    const type = isObject(resource) ? resource.resourceType : undefined;
    this.location.push(typeof type === 'string' && isConcreteResourceType(type) ? type : 'Resource');
    this.walkResource(resource, 'root', extraProfiles);
    if (this.pending.length > 0 && !this.stopped) {
      evaluatePending(this.pending, resource, this.sawLosslessNumber, (item) =>
        this.reportInvariant(item.inv, item.location),
      );
    }
    // Several profiles, or both sides of a primitive/"_primitive" pair, may report the same issue.
    const issues = this.mayRepeatIssues || this.issues.length > 1 ? dedupe(this.issues) : this.issues;
    const root = this.location.toString();
    if (this.stopped) {
      issues.push({ severity: 'error', code: 'too-costly', message: `Validation stopped after ${MAX_ISSUES} issues: the resource has more, which are not listed`, expression: root });
    } else if (this.unlisted > 0) {
      issues.push({ severity: 'information', code: 'informational', message: `${this.unlisted} more warnings are not listed`, expression: root });
    }
    return issues;
  }

  walkResource(node: unknown, role: ResourceRole, extraProfiles?: CompiledType[]): void {
    if (!isObject(node)) {
      this.report('error', 'structure', 'A resource must be a JSON object');
      return;
    }
    const resourceType = node.resourceType;
    if (resourceType === undefined) {
      this.report('error', 'required', 'Missing resourceType');
      return;
    }
    if (typeof resourceType !== 'string' || !isConcreteResourceType(resourceType)) {
      this.report('error', 'invalid', 'resourceType is not a known FHIR R4 resource type', this.location.child('resourceType'));
      return;
    }
    const base = compiledType(resourceType);
    const profiles = profileTypesFor(node, base, extraProfiles, this);
    const outerEnv = this.env;
    this.env = { resource: node, rootResource: role === 'contained' ? outerEnv.rootResource : node };
    if (profiles === undefined) {
      this.walkObject(node, base);
    } else {
      // Each profile type includes the base checks; the same issue may come up once per profile.
      if (profiles.length > 1) this.mayRepeatIssues = true;
      for (const type of profiles) this.walkObject(node, type);
    }
    this.env = outerEnv;
  }

  walkObject(node: Obj, type: CompiledType): void {
    let choices = 0;
    for (const key in node) {
      if (this.stopped) return;
      const value = node[key];
      const field = type.fields.get(key);
      if (field === undefined) {
        if (key === 'resourceType' && type.isResource) continue;
        this.report(
          'error',
          'structure',
          `Unknown property "${safePropertyName(key)}": not an element of ${type.name}`,
          this.location.child(safePropertyName(key)),
        );
        continue;
      }
      if (field.choiceBit !== 0) {
        // "_valueString" next to "valueString" is the same variant.
        if (field.kind !== 'primitive-extension' || node[field.valueKey] === undefined) {
          if ((choices & field.choiceBit) !== 0) {
            this.report('error', 'structure', `Only one type of ${field.name} is allowed`, this.location.child(key));
          }
          choices |= field.choiceBit;
        }
      }
      this.location.push(field.kind === 'primitive-extension' ? field.valueKey : key);
      if (field.max === 0) {
        this.report('error', 'structure', `${field.name} is not allowed${profileNote(field.profile)}`);
      } else if (value === null) {
        this.report('error', 'structure', 'null is not allowed here (only inside arrays of primitives with extensions)');
      } else if (field.isArray) {
        this.checkArray(node, value, field);
      } else if (Array.isArray(value)) {
        this.report('error', 'structure', `${field.name} takes a single value, not an array`);
      } else {
        this.checkItem(value, field);
      }
      this.location.pop();
    }
    if (this.stopped) return;

    for (const rule of type.required) {
      let present = false;
      for (let i = 0; i < rule.keys.length; i++) {
        if (node[rule.keys[i]] !== undefined) {
          present = true;
          break;
        }
      }
      if (!present) {
        this.report(
          'error',
          'required',
          `Missing required element ${rule.name}${profileNote(rule.profile)}`,
          this.location.child(rule.name),
        );
      }
    }

    // ext-1, checked structurally: an extension has a value[x] or nested extensions, not both.
    if (type.isExtension && ((choices & type.valueChoiceBit) !== 0) === (node.extension !== undefined)) {
      this.report('error', 'invariant', 'Constraint ext-1 failed: an extension must have either extensions or value[x], not both');
    }

    const invariants = type.invariants;
    for (let i = 0; i < invariants.length; i++) this.checkInvariant(invariants[i], node, type);
  }

  private checkArray(parent: Obj, value: unknown, field: Field): void {
    if (!Array.isArray(value)) {
      this.report('error', 'structure', `${field.name} must be an array`);
      return;
    }
    if (value.length === 0) {
      this.report('error', 'structure', 'Empty arrays are not allowed in FHIR JSON');
      return;
    }
    if (value.length > field.max) {
      this.report('error', 'structure', `At most ${field.max} ${field.name} allowed, found ${value.length}${profileNote(field.profile)}`);
    }
    if (value.length < field.min) {
      this.report('error', 'required', `At least ${field.min} ${field.name} required, found ${value.length}${profileNote(field.profile)}`);
    }
    // Arrays of primitives and their "_key" siblings pair up by index; null fills the gaps.
    let partner: unknown;
    if (field.kind === 'primitive') partner = parent[field.extensionKey];
    else if (field.kind === 'primitive-extension') {
      partner = parent[field.valueKey];
      if (Array.isArray(partner) && partner.length !== value.length) {
        this.report('error', 'structure', `_${field.valueKey} must have as many items as ${field.valueKey}`);
      }
    }
    for (let i = 0; i < value.length && !this.stopped; i++) {
      const item = value[i];
      this.location.push(i);
      if (item === null) {
        if (field.kind === 'complex' || field.kind === 'resource') {
          this.report('error', 'structure', `null is not allowed in ${field.name} (FHIR JSON allows null only as a placeholder in arrays of primitives)`);
        } else {
          const paired = Array.isArray(partner) && partner[i] !== null && partner[i] !== undefined;
          if (!paired) this.report('error', 'structure', 'null is only allowed where the paired primitive or extension is present');
        }
      } else {
        this.checkItem(item, field);
      }
      this.location.pop();
    }
  }

  private checkItem(value: unknown, field: Field): void {
    switch (field.kind) {
      case 'primitive':
        this.checkPrimitive(value, field);
        return;
      case 'primitive-extension':
        if (!isObject(value)) {
          this.report('error', 'structure', `_${field.valueKey} must hold objects with id/extension`);
        } else if (isEmptyObject(value)) {
          this.report('error', 'structure', 'Empty objects are not allowed in FHIR JSON');
        } else {
          this.walkObject(value, compiledType('Element'));
        }
        return;
      case 'complex':
        this.checkComplex(value, field);
        return;
      case 'resource':
        this.walkResource(value, field.key === 'contained' ? 'contained' : 'entry');
        return;
    }
  }

  private checkPrimitive(value: unknown, field: Field): void {
    const rule = field.primitive!;
    if (!hasJsonKind(value, rule.json)) {
      this.report('error', 'structure', `${field.name} must be a JSON ${rule.json} (${rule.type})`);
      return;
    }
    if (rule.json === 'number' && typeof value !== 'number') this.sawLosslessNumber = true;
    const problem = rule.check(value);
    if (problem !== undefined) {
      this.report('error', 'value', problem);
      return;
    }
    if (rule.type === 'xhtml') {
      const finding = checkNarrativeXhtml(value as string);
      if (finding !== undefined) this.report(finding.severity, finding.code, finding.message);
    }
    this.checkConformance(value, field);
    for (let i = 0; i < field.invariants.length; i++) this.checkInvariant(field.invariants[i], value, undefined);
  }

  private checkComplex(value: unknown, field: Field): void {
    if (!isObject(value)) {
      this.report('error', 'structure', `${field.name} must be a JSON object (${field.typeName})`);
      return;
    }
    if (isEmptyObject(value)) {
      this.report('error', 'structure', 'Empty objects are not allowed in FHIR JSON');
      return;
    }
    const type = field.complexType ?? fieldType(field);
    this.walkObject(value, type);
    if (field.typeName === 'Reference') {
      const problem = checkReference(value, field.referenceTargets);
      if (problem !== undefined) {
        const severity = problem.code === 'invalid' && field.targetsFromProfile ? 'error' : problem.severity;
        this.report(severity, problem.code, problem.message, this.location.child('reference'));
      }
    }
    this.checkConformance(value, field);
    for (let i = 0; i < field.invariants.length; i++) this.checkInvariant(field.invariants[i], value, type);
  }

  /** Required binding, fixed and pattern values. */
  private checkConformance(value: unknown, field: Field): void {
    if (field.binding !== undefined && !satisfiesBinding(field.binding, value)) {
      this.report(
        'error',
        'code-invalid',
        `Code is not in the required value set ${field.binding.valueSet}${profileNote(field.profile)}`,
      );
    }
    if (field.fixed !== undefined && !equalsFixed(value, field.fixed)) {
      this.report('error', 'value', `Value does not match the fixed value${profileNote(field.profile)}`);
    }
    if (field.pattern !== undefined && !matchesPattern(value, field.pattern)) {
      this.report('error', 'value', `Value does not match the required pattern${profileNote(field.profile)}`);
    }
  }

  private checkInvariant(inv: Invariant, node: unknown, type: CompiledType | undefined): void {
    const decided = decideWithoutFhirpath(inv, node, type, this.env);
    if (decided === false) this.reportInvariant(inv, this.location.toString());
    if (decided === undefined || shouldCrossCheck()) {
      this.pending.push({ inv, node, env: this.env, location: this.location.toString(), expected: decided });
    }
  }

  private reportInvariant(inv: Invariant, location: string): void {
    this.report('error', 'invariant', `Constraint ${inv.key} failed: ${inv.human}${profileNote(inv.profile)}`, location);
  }
}

function dedupe(issues: ValidationIssue[]): ValidationIssue[] {
  const seen = new Set<string>();
  return issues.filter((i) => {
    const id = `${i.severity}|${i.code}|${i.expression}|${i.message}`;
    if (seen.has(id)) return false;
    seen.add(id);
    return true;
  });
}

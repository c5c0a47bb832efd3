/**
 * PATCH [base]/[type]/[id] in the three formats FHIR R4 allows: JSON Patch (RFC 6902), JSON merge patch
 * (RFC 7386) and FHIRPath Patch (a Parameters resource, https://hl7.org/fhir/R4/fhirpatch.html).
 * A patch is checked (and its FHIRPath expressions compiled) once, before the write session, then applied
 * to the current version.
 */
import jsonpatch from 'fast-json-patch';
import fhirpath from 'fhirpath';
import r4 from 'fhirpath/fhir-context/r4';
import type { Handler } from '../context.ts';
import { cloneFhirJson, isLosslessNumber, parseFhirJson } from '../json.ts';
import { errors, type FhirError } from '../outcome.ts';
import type { FhirResource, WriteSession } from '../repository.ts';
import { schemaFor } from '../validation/definitions.ts';
import type { Access } from '../../access/policy.ts';
import type { WriteOutcome } from './create.ts';
import { parseIfMatch, writeResponse } from './common.ts';
import { assertWritable, assertWritableVersion, authorizeUpdate } from './authorization.ts';

export type PatchKind = 'json-patch' | 'merge-patch' | 'fhirpath-patch';

/**
 * The media type of a PATCH body names its format. Plain application/json is what some clients send
 * (fhirpy's `save(fields=…)` sends a partial resource): its format is read from the body's shape.
 */
const PATCH_MEDIA_TYPES = new Map<string, PatchKind | 'by-shape'>([
  ['application/json-patch+json', 'json-patch'],
  ['application/merge-patch+json', 'merge-patch'],
  ['application/fhir+json', 'fhirpath-patch'],
  ['application/json', 'by-shape'],
]);

export const PATCH_FORMATS = [...PATCH_MEDIA_TYPES.keys()];

/** The text of the 415 a PATCH in any other format gets. */
export const PATCH_FORMATS_ACCEPTED =
  'PATCH takes Content-Type application/json-patch+json (JSON Patch), application/merge-patch+json (JSON merge patch), ' +
  'application/fhir+json (FHIRPath Patch: a Parameters resource) or application/json (an array: JSON Patch; a ' +
  'Parameters resource: FHIRPath Patch; any other object: JSON merge patch)';

/** Whether a media type (without parameters) is one a PATCH body may have. */
export function isPatchMediaType(mediaType: string | undefined): boolean {
  return mediaType !== undefined && PATCH_MEDIA_TYPES.has(mediaType);
}

/** The patch format of a body of this media type, if it is one the gateway applies. */
export function patchKind(mediaType: string | undefined, document?: unknown): PatchKind | undefined {
  const kind = mediaType === undefined ? undefined : PATCH_MEDIA_TYPES.get(mediaType);
  if (kind !== 'by-shape') return kind;
  if (Array.isArray(document)) return 'json-patch';
  return (document as { resourceType?: unknown } | undefined)?.resourceType === 'Parameters' ? 'fhirpath-patch' : 'merge-patch';
}

/** A patch whose shape is checked and whose expressions are compiled, ready to apply to a resource. */
export interface PreparedPatch {
  readonly kind: PatchKind;
  /** Returns the patched resource (may modify `resource`). Throws a 422 FhirError when it does not apply. */
  apply(resource: FhirResource): FhirResource;
}

function cannotApply(kind: PatchKind, diagnostics: string, code = 'processing'): FhirError {
  const name = kind === 'json-patch' ? 'JSON Patch' : kind === 'merge-patch' ? 'JSON merge patch' : 'FHIRPath Patch';
  return errors.unprocessable([{ severity: 'error', code, diagnostics: `the ${name} cannot be applied: ${diagnostics}` }]);
}

/** Checks a patch document of the given kind (400/422 when malformed) and prepares it. */
export function preparePatch(kind: PatchKind, document: unknown): PreparedPatch {
  switch (kind) {
    case 'json-patch':
      return prepareJsonPatch(document);
    case 'merge-patch':
      if (!isObject(document)) throw errors.badRequest('a JSON merge patch must be a JSON object');
      return { kind, apply: (resource) => mergePatch(resource, document) as FhirResource };
    case 'fhirpath-patch':
      return prepareFhirPathPatch(document);
  }
}

/**
 * The patch a Bundle PATCH entry carries: a Binary holding a JSON Patch or a JSON merge patch (its
 * contentType names which, its data the base64 document), or a FHIRPath Patch Parameters resource.
 */
export function entryPatch(resource: unknown): PreparedPatch {
  const r = resource as { resourceType?: unknown; contentType?: unknown; data?: unknown } | undefined;
  if (r?.resourceType === 'Parameters') return preparePatch('fhirpath-patch', r);
  const kind = r?.resourceType === 'Binary' && typeof r.contentType === 'string' ? PATCH_MEDIA_TYPES.get(r.contentType) : undefined;
  if ((kind !== 'json-patch' && kind !== 'merge-patch') || typeof r?.data !== 'string') {
    throw errors.notSupported(
      'a PATCH entry must carry a Parameters resource (FHIRPath Patch) or a Binary with contentType ' +
        'application/json-patch+json or application/merge-patch+json',
    );
  }
  let document: unknown;
  try {
    document = parseFhirJson(new TextDecoder('utf-8', { fatal: true }).decode(Buffer.from(r.data, 'base64')));
  } catch {
    throw errors.badRequest('the Binary of a PATCH entry does not hold UTF-8 JSON');
  }
  return preparePatch(kind, document);
}

/** Applies a prepared patch to the current version and stores the result as a new version. */
export async function patchResource(
  session: WriteSession,
  type: string,
  id: string,
  patch: PreparedPatch,
  access: Access,
  ifMatch?: number,
): Promise<WriteOutcome> {
  const current = await session.current(type, id);
  // Before any other answer: a patient-bound token sees others' resources, and deletions, as missing.
  assertWritableVersion(access, current, type);
  if (current.deleted || !current.json) throw errors.gone(`this ${type} was deleted`);
  if (ifMatch !== undefined && current.versionId !== ifMatch) {
    throw errors.preconditionFailed(`If-Match names another version than the current one (${current.versionId})`);
  }
  const patched = patch.apply(parseFhirJson(current.json) as FhirResource);
  if (patched?.resourceType !== type || patched.id !== id) {
    throw cannotApply(patch.kind, 'a patch must not change resourceType or id');
  }
  assertWritable(access, type, patched);
  const { version } = await session.update(patched, id, current.versionId);
  return { status: 200, version, message: `patched the ${type} to version ${version.versionId}` };
}

/** PATCH [base]/[type]/[id]: the body's Content-Type names the patch format. */
export const patch: Handler = async (req, ctx, { type, id }) => {
  const access = authorizeUpdate(req, type, false);
  const ifMatch = parseIfMatch(req.ifMatch);
  if (req.body === undefined) throw errors.badRequest('the request has no body');
  const kind = patchKind(req.contentType, req.body);
  if (!kind) throw errors.unsupportedMediaType(PATCH_FORMATS_ACCEPTED);
  const prepared = preparePatch(kind, req.body);
  const result = await ctx.repo.write((s) => patchResource(s, type, id, prepared, access, ifMatch));
  return writeResponse(result.status, result.version, req, ctx, result.message);
};

// ---------------------------------------------------------------------------------------------
// JSON Patch and JSON merge patch
// ---------------------------------------------------------------------------------------------

function prepareJsonPatch(document: unknown): PreparedPatch {
  if (!Array.isArray(document)) throw errors.badRequest('a JSON Patch body must be an array of operations');
  const operations = document as jsonpatch.Operation[];
  const invalid = jsonpatch.validate(operations);
  if (invalid) throw cannotApply('json-patch', `operation ${invalid.index} is malformed (${invalid.name})`);
  return {
    kind: 'json-patch',
    apply(resource) {
      try {
        // A copy of the operations: fast-json-patch inserts their values by reference, so a later operation
        // would write into the request body.
        return jsonpatch.applyPatch(resource, cloneFhirJson(operations) as jsonpatch.Operation[], true, true).newDocument;
      } catch (e) {
        // fast-json-patch's messages quote the document: only its error name and the operation index are kept.
        const { name, index } = e as { name?: string; index?: number };
        throw cannotApply('json-patch', `${index === undefined ? 'an operation' : `operation ${index}`} failed (${name || 'invalid operation'})`);
      }
    },
  };
}

/** A JSON object (not an array, not a lossless number). */
function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !isLosslessNumber(v);
}

/** Sets an own property, whatever its name (a `__proto__` key stays data, never a prototype). */
function setOwn(target: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

/** RFC 7386: objects merge key by key, null removes a key, anything else replaces. */
function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isObject(patch)) return patch;
  const result: Record<string, unknown> = {};
  if (isObject(target)) for (const [k, v] of Object.entries(target)) setOwn(result, k, v);
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete result[k];
    else setOwn(result, k, mergePatch(Object.hasOwn(result, k) ? result[k] : undefined, v));
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// FHIRPath Patch
// ---------------------------------------------------------------------------------------------

const FHIRPATH_OPERATIONS = ['add', 'insert', 'delete', 'replace', 'move'] as const;
type FhirPathOperationType = (typeof FHIRPATH_OPERATIONS)[number];

/** What fhirpath.js returns for an element of the resource when internal types are not resolved. */
interface ResourceNode {
  data: unknown;
  parentResNode: ResourceNode | null;
  path: string | null;
  propName: string | null;
  index: number | null;
  fhirNodeDataType: string | null;
}

interface FhirPathOperation {
  /** Position in the Parameters, for error messages (never the operation's values). */
  n: number;
  type: FhirPathOperationType;
  select: (resource: FhirResource) => unknown[];
  name?: string;
  value?: { value: unknown; type?: string };
  index?: number;
  source?: number;
  destination?: number;
}

interface Part {
  name?: unknown;
  part?: unknown;
  [key: string]: unknown;
}

/** The value[x] of a parameter part, with the type its key names, or an object built from its parts. */
function partValue(part: Part): { value: unknown; type?: string } | undefined {
  for (const key of Object.keys(part)) {
    if (key.startsWith('value') && key.length > 5) return { value: part[key], type: key.slice(5) };
  }
  if (!Array.isArray(part.part)) return undefined;
  const value: Record<string, unknown> = {};
  for (const p of part.part as Part[]) {
    const inner = isObject(p) && typeof p.name === 'string' ? partValue(p) : undefined;
    if (!inner) return undefined;
    setOwn(value, p.name as string, inner.value);
  }
  return { value };
}

function prepareFhirPathPatch(document: unknown): PreparedPatch {
  const params = document as { resourceType?: unknown; parameter?: unknown };
  if (!isObject(params) || params.resourceType !== 'Parameters' || !Array.isArray(params.parameter)) {
    throw errors.badRequest('a FHIRPath Patch must be a Parameters resource with operation parameters');
  }
  const operations = params.parameter.map((parameter: unknown, n: number): FhirPathOperation => {
    const bad = (what: string) => cannotApply('fhirpath-patch', `operation ${n} ${what}`, 'invalid');
    if (!isObject(parameter) || parameter.name !== 'operation' || !Array.isArray(parameter.part)) {
      throw bad('is not an operation parameter with parts');
    }
    const parts = new Map<string, Part>();
    for (const p of parameter.part as Part[]) {
      if (!isObject(p) || typeof p.name !== 'string') throw bad('has a part without a name');
      parts.set(p.name, p);
    }
    const type = parts.get('type')?.valueCode;
    if (!FHIRPATH_OPERATIONS.includes(type as FhirPathOperationType)) {
      throw bad(`needs a type (valueCode ${FHIRPATH_OPERATIONS.join(', ')})`);
    }
    const path = parts.get('path')?.valueString;
    if (typeof path !== 'string') throw bad('needs a path (valueString)');
    let select: FhirPathOperation['select'];
    try {
      // trace() would write the resource's values to stdout.
      select = fhirpath.compile(path, r4, { resolveInternalTypes: false, traceFn: () => {} }) as FhirPathOperation['select'];
    } catch {
      throw bad('has a path that is not a valid FHIRPath expression');
    }
    const integer = (name: string) => {
      const v = parts.get(name)?.valueInteger;
      if (v === undefined) return undefined;
      if (!Number.isInteger(v) || (v as number) < 0) throw bad(`has a ${name} that is not a non-negative integer`);
      return v as number;
    };
    const op: FhirPathOperation = {
      n, type: type as FhirPathOperationType, select,
      index: integer('index'), source: integer('source'), destination: integer('destination'),
    };
    const name = parts.get('name')?.valueString;
    if (typeof name === 'string') op.name = name;
    const value = parts.get('value');
    if (value) op.value = partValue(value);
    if (op.type === 'add' && !/^[a-z][A-Za-z0-9]*$/.test(op.name ?? '')) throw bad('(add) needs the name of an element');
    if ((op.type === 'add' || op.type === 'insert' || op.type === 'replace') && !op.value) throw bad(`(${op.type}) needs a value`);
    if (op.type === 'insert' && op.index === undefined) throw bad('(insert) needs an index');
    if (op.type === 'move' && (op.source === undefined || op.destination === undefined)) throw bad('(move) needs a source and a destination');
    return op;
  });
  return {
    kind: 'fhirpath-patch',
    apply(resource) {
      for (const op of operations) applyFhirPathOperation(resource, op);
      return resource;
    },
  };
}

function isResourceNode(v: unknown): v is ResourceNode {
  return typeof v === 'object' && v !== null && 'parentResNode' in v && 'propName' in v;
}

/** Where an element lives: its parent object and the JSON key it is under (a choice element's full key). */
function location(node: ResourceNode): { parent: Record<string, unknown>; key: string } | undefined {
  const parent = node.parentResNode?.data;
  if (!isObject(parent) || !node.propName) return undefined;
  if (Object.hasOwn(parent, node.propName)) return { parent, key: node.propName };
  const type = node.fhirNodeDataType ?? '';
  const choice = node.propName + type.charAt(0).toUpperCase() + type.slice(1);
  return Object.hasOwn(parent, choice) ? { parent, key: choice } : undefined;
}

/** The element definitions of a node's type (a backbone element's type is named by its path). */
function elementsOf(node: ResourceNode): Record<string, { isArray?: boolean }> | undefined {
  try {
    let typeName = node.fhirNodeDataType ?? '';
    if ((typeName === 'BackboneElement' || typeName === 'Element') && node.path) {
      const [root, ...steps] = node.path.split('.');
      typeName = root;
      for (const step of steps) typeName = schemaFor(typeName).elements[step]?.type[0]?.code ?? '';
    }
    return schemaFor(typeName).elements;
  } catch {
    return undefined; // not a type the definitions describe
  }
}

/** Removes list item `index` of `key` (and of its `_key` primitive extensions); drops emptied lists. */
function spliceOut(parent: Record<string, unknown>, key: string, index: number): void {
  const list = parent[key] as unknown[];
  list.splice(index, 1);
  const extensions = parent[`_${key}`];
  if (Array.isArray(extensions)) extensions.splice(index, 1);
  if (list.length === 0) {
    delete parent[key];
    delete parent[`_${key}`];
  }
}

function spliceIn(parent: Record<string, unknown>, key: string, index: number, value: unknown): void {
  (parent[key] as unknown[]).splice(index, 0, value);
  const extensions = parent[`_${key}`];
  if (Array.isArray(extensions)) extensions.splice(index, 0, null);
}

function applyFhirPathOperation(resource: FhirResource, op: FhirPathOperation): void {
  const fail = (what: string, code?: string) => cannotApply('fhirpath-patch', `operation ${op.n} (${op.type}) ${what}`, code);
  let selected: unknown[];
  try {
    selected = op.select(resource);
  } catch {
    throw fail('has a path that cannot be evaluated');
  }
  if (!selected.every(isResourceNode)) throw fail('has a path that does not select elements of the resource', 'not-supported');
  const nodes = selected as ResourceNode[];
  if (op.type === 'delete' && nodes.length === 0) return; // deleting what is not there is no change
  if (nodes.length === 0) throw fail('has a path that matches no element');
  if (op.type === 'add') {
    if (nodes.length > 1) throw fail('has a path that matches more than one element');
    const target = nodes[0].data;
    const elements = elementsOf(nodes[0]);
    if (!isObject(target) || !elements) throw fail('has a path that does not select an element with children', 'not-supported');
    const name = op.name!;
    const choice = Object.hasOwn(elements, `${name}[x]`);
    const element = choice ? elements[`${name}[x]`] : Object.hasOwn(elements, name) ? elements[name] : undefined;
    if (!element) throw fail('names an element its target does not have');
    if (choice && !op.value!.type) throw fail('needs a value[x] for a choice element');
    const key = choice ? `${name}${op.value!.type}` : name;
    if (element.isArray) {
      if (!Object.hasOwn(target, key)) setOwn(target, key, []);
      (target[key] as unknown[]).push(op.value!.value);
    } else {
      if (choice ? Object.keys(target).some((k) => k.startsWith(name) && /^[A-Z]/.test(k.slice(name.length))) : Object.hasOwn(target, key)) {
        throw fail('adds an element that is present and does not repeat; use replace');
      }
      setOwn(target, key, op.value!.value);
    }
    return;
  }
  const at = nodes.map(location);
  if (at.some((l) => l === undefined)) throw fail('has a path that does not select elements of the resource', 'not-supported');
  const first = at[0]!;
  if (op.type === 'insert' || op.type === 'move') {
    // The path names a list: every match must be an item of the same list.
    if (!at.every((l) => l!.parent === first.parent && l!.key === first.key) || nodes.some((n) => n.index === null)) {
      throw fail('has a path that does not select one list');
    }
    const length = (first.parent[first.key] as unknown[]).length;
    if (op.type === 'insert') {
      if (op.index! > length) throw fail('has an index beyond the end of the list');
      spliceIn(first.parent, first.key, op.index!, op.value!.value);
    } else {
      if (op.source! >= length || op.destination! >= length) throw fail('has a source or destination beyond the end of the list');
      for (const list of [first.parent[first.key], first.parent[`_${first.key}`]]) {
        if (Array.isArray(list)) list.splice(op.destination!, 0, ...list.splice(op.source!, 1));
      }
    }
    return;
  }
  if (nodes.length > 1) throw fail('has a path that matches more than one element');
  const index = nodes[0].index;
  if (op.type === 'delete') {
    if (index !== null) spliceOut(first.parent, first.key, index);
    else {
      delete first.parent[first.key];
      delete first.parent[`_${first.key}`];
    }
    return;
  }
  // replace
  if (index !== null) {
    (first.parent[first.key] as unknown[])[index] = op.value!.value;
  } else if (first.key !== nodes[0].propName && op.value!.type) {
    // A choice element may be replaced by another of its types: valueQuantity by valueString.
    delete first.parent[first.key];
    setOwn(first.parent, `${nodes[0].propName}${op.value!.type}`, op.value!.value);
  } else {
    first.parent[first.key] = op.value!.value;
  }
}

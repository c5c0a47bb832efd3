// Narrative XHTML (Narrative.div) against the FHIR rules (R4 narrative.html#xhtml, invariants txt-1 and
// txt-2): well-formed XML whose root is <div> in the XHTML namespace; only the basic HTML formatting
// elements and attributes (the list the HL7 Java validator enforces), so no script, style, form, frame,
// object, head, body, link, base...; no event-handler attributes; no processing instructions or DTDs; no
// script URLs; and some non-whitespace content. fhirpath.js has no htmlChecks(), so the walker runs this
// on every xhtml value instead of evaluating the two invariants.
//
// Messages name elements and attributes only when they are well-known HTML names, never data values.
import sax from 'sax';

const XHTML_NS = 'http://www.w3.org/1999/xhtml';

/** txt-1: "the basic html formatting elements ... of the HTML 4.0 standard, <a> elements, images". */
const ALLOWED_ELEMENTS = new Set([
  'p', 'br', 'div', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'a', 'span', 'b', 'em', 'i', 'strong', 'small', 'big',
  'tt', 'dfn', 'q', 'var', 'abbr', 'acronym', 'cite', 'blockquote', 'hr', 'address', 'bdo', 'kbd', 'sub', 'sup',
  'ul', 'ol', 'li', 'dl', 'dt', 'dd', 'pre', 'table', 'caption', 'colgroup', 'col', 'thead', 'tr', 'tfoot',
  'tbody', 'th', 'td', 'code', 'samp', 'img', 'map', 'area',
]);

/** Elements the narrative rules name (or imply) as forbidden: safe to name in a message. */
const NAMED_FORBIDDEN = new Set([
  'script', 'noscript', 'style', 'head', 'body', 'html', 'title', 'meta', 'base', 'link', 'form', 'input',
  'button', 'select', 'option', 'textarea', 'label', 'fieldset', 'frame', 'frameset', 'iframe', 'object',
  'embed', 'applet', 'param', 'svg', 'math', 'template', 'video', 'audio', 'source', 'canvas', 'font',
  'center', 'u', 's', 'strike', 'marquee', 'blink',
]);

/** Attributes allowed on every element. */
const GLOBAL_ATTRIBUTES = new Set([
  'title', 'style', 'class', 'id', 'lang', 'xml:lang', 'dir', 'accesskey', 'tabindex',
  // tables
  'span', 'width', 'align', 'valign', 'char', 'charoff', 'abbr', 'axis', 'headers', 'scope', 'rowspan', 'colspan',
]);

/** Attributes allowed on one element only, as `element.attribute`. */
const ELEMENT_ATTRIBUTES = new Set([
  'a.href', 'a.name', 'a.charset', 'a.type', 'a.hreflang', 'a.rel', 'a.rev', 'a.shape', 'a.coords',
  'img.src', 'img.border', 'img.alt', 'img.longdesc', 'img.height', 'img.width', 'img.usemap', 'img.ismap',
  'blockquote.cite', 'q.cite', 'map.name', 'area.shape', 'area.coords', 'area.href', 'area.nohref', 'area.alt',
  'table.summary', 'table.width', 'table.border', 'table.frame', 'table.rules', 'table.cellspacing',
  'table.cellpadding', 'pre.space', 'td.nowrap',
]);

/** Attributes that hold a URL a browser would follow or load. */
const URL_ATTRIBUTES = new Set(['href', 'src', 'cite', 'longdesc', 'usemap']);
/** Browsers drop ASCII whitespace and control characters inside a URL's scheme ("java\tscript:"). */
const IGNORED_IN_SCHEME = /[\u0000-\u0020]/g;
const SCRIPT_SCHEME = /^(javascript|vbscript|livescript):/i;

function elementName(local: string): string {
  return ALLOWED_ELEMENTS.has(local) || NAMED_FORBIDDEN.has(local) ? `<${local}>` : 'an unknown element';
}

function attributeProblem(element: string, attr: sax.QualifiedAttribute): string | undefined {
  const name = attr.name;
  if (name === 'xmlns' || attr.prefix === 'xmlns') return undefined;
  if (/^on/i.test(attr.local)) return `<${element}> has an event-handler attribute (on...)`;
  if (!GLOBAL_ATTRIBUTES.has(name) && !ELEMENT_ATTRIBUTES.has(`${element}.${name}`)) {
    return `<${element}> has an attribute that is not allowed`;
  }
  if (URL_ATTRIBUTES.has(name) && SCRIPT_SCHEME.test(attr.value.replace(IGNORED_IN_SCHEME, ''))) {
    return `<${element}> has a script URL in ${name}`;
  }
  return undefined;
}

export interface NarrativeFinding {
  severity: 'error' | 'warning';
  code: 'value' | 'invariant';
  message: string;
}

/**
 * The first rule the narrative XHTML breaks, or undefined when it follows them all. An empty narrative
 * (txt-2) is only a warning: R4 computes txt-2 with the same htmlChecks() as txt-1, and official R4
 * examples (EventDefinition-example, ActivityDefinition-blood-tubes-supply...) have empty ones.
 */
export function checkNarrativeXhtml(div: string): NarrativeFinding | undefined {
  let finding: NarrativeFinding | undefined;
  let depth = 0;
  let roots = 0;
  let hasContent = false;
  const fail = (code: NarrativeFinding['code'], message: string): void => {
    finding ??= { severity: 'error', code, message };
  };
  const txt1 = (problem: string): void => fail('invariant', `Constraint txt-1 failed in the narrative XHTML: ${problem}`);
  const parser = sax.parser(true, { xmlns: true, position: false });
  parser.onerror = () => fail('value', 'Narrative XHTML is not well-formed XML');
  parser.onprocessinginstruction = () => fail('value', 'Narrative XHTML must not contain processing instructions');
  parser.ondoctype = () => fail('value', 'Narrative XHTML must not contain a DOCTYPE');
  parser.onsgmldeclaration = () => fail('value', 'Narrative XHTML must not contain SGML declarations');
  parser.ontext = (text) => {
    if (!hasContent && /[^ \t\r\n]/.test(text)) hasContent = true;
  };
  parser.oncdata = parser.ontext;
  parser.onopentag = (tag) => {
    const node = tag as sax.QualifiedTag;
    if (depth++ === 0 && roots++ === 0) {
      if (node.local !== 'div' || node.uri !== XHTML_NS) fail('value', `Narrative XHTML must be a <div xmlns="${XHTML_NS}"> element`);
    } else if (depth === 1) {
      fail('value', 'Narrative XHTML must be a single <div> element');
    }
    if (node.uri !== XHTML_NS) {
      fail('value', 'Narrative XHTML elements must be in the XHTML namespace');
      return;
    }
    if (!ALLOWED_ELEMENTS.has(node.local)) {
      txt1(`${elementName(node.local)} is not allowed`);
      return;
    }
    if (node.local === 'img' && node.attributes.src !== undefined) hasContent = true;
    for (const key in node.attributes) {
      const problem = attributeProblem(node.local, node.attributes[key]);
      if (problem !== undefined) txt1(problem);
    }
  };
  parser.onclosetag = () => {
    depth--;
  };
  parser.write(div);
  if (finding === undefined) parser.close();
  if (roots === 0) fail('value', `Narrative XHTML must be a <div xmlns="${XHTML_NS}"> element`);
  if (finding === undefined && !hasContent) {
    return { severity: 'warning', code: 'invariant', message: 'Constraint txt-2 failed: the narrative SHALL have some non-whitespace content' };
  }
  return finding;
}

'use strict';
// JSON Schema 2020-12 validation against the repository's schemas/*.schema.json (ajv).
const fs = require('fs');
const path = require('path');
const Ajv2020 = require('ajv/dist/2020');

let ajv = null;

/** A calendar date YYYY-MM-DD that exists (the "date" format of RFC 3339 full-date). */
function isDate(s) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(s);
  if (!m) return false;
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (mo < 1 || mo > 12 || d < 1) return false;
  const days = [31, (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0 ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
  return d <= days[mo - 1];
}

function load(schemaDir) {
  if (ajv) return ajv;
  ajv = new Ajv2020({ strict: false, allErrors: false, validateFormats: true });
  ajv.addFormat('date', { type: 'string', validate: isDate });
  for (const f of fs.readdirSync(schemaDir).filter((n) => n.endsWith('.schema.json')).sort()) {
    const schema = JSON.parse(fs.readFileSync(path.join(schemaDir, f), 'utf8'));
    ajv.addSchema(schema, f); // refs are relative file names, resolved against each $id
  }
  return ajv;
}

/** Returns null when valid, else the first error as "path: message". */
function validate(schemaDir, name, value) {
  const a = load(schemaDir);
  const v = a.getSchema(name);
  if (!v) throw new Error(`schema ${name} not found`);
  if (v(value)) return null;
  const e = v.errors[0];
  return `${e.instancePath || '$'} ${e.message}`;
}

module.exports = { validate, isDate };

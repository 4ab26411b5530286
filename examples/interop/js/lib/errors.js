'use strict';
// A protocol failure carrying one of the stable error codes of SPEC.md §7.
class CasewayError extends Error {
  constructor(code, detail) {
    super(detail ? `${code}: ${detail}` : code);
    this.code = code;
  }
}
function fail(code, detail) {
  throw new CasewayError(code, detail);
}
module.exports = { CasewayError, fail };

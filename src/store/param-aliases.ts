/**
 * R4 search parameters whose index rows are exactly the union of other parameters' rows (their
 * FHIRPath expressions are the union of the others'). They are not stored; a search on one
 * reads the rows of its members, which saves four index rows on every Observation.
 */
const UNIONS: Record<string, Record<string, readonly string[]>> = {
  Observation: {
    'combo-code': ['code', 'component-code'],
    'combo-data-absent-reason': ['data-absent-reason', 'component-data-absent-reason'],
    'combo-value-concept': ['value-concept', 'component-value-concept'],
    'combo-value-quantity': ['value-quantity', 'component-value-quantity'],
  },
};

/** Whether the parameter's rows are not stored because its members' rows make them up. */
export function isUnionParam(resourceType: string, code: string): boolean {
  return UNIONS[resourceType]?.[code] !== undefined;
}

/**
 * The stored parameter names that hold a parameter's rows. A derived row name keeps its suffix:
 * 'combo-code:text' -> ['code:text', 'component-code:text'].
 */
export function storedParams(resourceType: string, param: string): string[] {
  const colon = param.indexOf(':');
  const base = colon < 0 ? param : param.slice(0, colon);
  const suffix = colon < 0 ? '' : param.slice(colon);
  const members = UNIONS[resourceType]?.[base];
  return members ? members.map((m) => `${m}${suffix}`) : [param];
}

/** The current version is not the one the write expected (If-Match, or a lost race). */
export class VersionConflictError extends Error {
  constructor(readonly resourceType: string, readonly id: string, readonly expected: number, readonly actual: number | undefined) {
    super(`${resourceType}/${id}: expected version ${expected}, current is ${actual ?? 'none'}`);
  }
}

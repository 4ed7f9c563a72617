/**
 * Group commit: write jobs queued while a commit is in flight run together in the next
 * database transaction, each after the first inside its own savepoint. One fsync then covers
 * many writes, and each job still commits or rolls back on its own. A job's promise settles only after
 * the COMMIT is durable (after `flush`, when the driver has one).
 */
export interface GroupCommitDriver<Tx> {
  begin(): void;
  commit(): void;
  rollback(): void;
  savepoint(): void;
  release(): void;
  rollbackToSavepoint(): void;
  /**
   * Makes what the last COMMIT wrote durable (e.g. an fsync on the thread pool), when COMMIT
   * itself does not. Jobs are answered only after it resolves; the next group runs meanwhile.
   */
  flush?(): Promise<void>;
  /** Called after a job rolled back or the whole group failed, so caches can forget uncommitted state. */
  onJobAborted(): void;
  onGroupCommitted(): void;
  /** Before a group's BEGIN: waits for a turn at the write lock (WriterTurns), if there are turns. */
  beforeBegin?(): Promise<void> | void;
  /** After the group's COMMIT or ROLLBACK, before its jobs are answered: gives the turn back. */
  afterEnd?(): void;
  tx: Tx;
}

interface Job<Tx> {
  fn: (tx: Tx) => Promise<unknown>;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

export class WriteQueue<Tx> {
  private readonly queue: Job<Tx>[] = [];
  private running = false;

  constructor(private readonly driver: GroupCommitDriver<Tx>, private readonly maxGroup = 512) {}

  run<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ fn, resolve: resolve as (v: unknown) => void, reject });
      if (!this.running) void this.drain();
    });
  }

  get idle(): boolean {
    return !this.running && this.queue.length === 0;
  }

  /** Jobs waiting for their group's transaction to begin (for the write queue depth metric). */
  get waiting(): number {
    return this.queue.length;
  }

  private async drain(): Promise<void> {
    this.running = true;
    try {
      // Let the requests that arrive in the same tick join the first group.
      await new Promise((r) => setImmediate(r));
      while (this.queue.length > 0) {
        await this.driver.beforeBegin?.();
        // Jobs that came while waiting for the turn join this group.
        const group = this.queue.splice(0, this.maxGroup);
        let answer: (() => void) | undefined;
        try {
          answer = await this.runGroup(group);
        } finally {
          this.driver.afterEnd?.();
        }
        answer();
      }
    } finally {
      this.running = false;
    }
  }

  /** Runs the group's transaction; returns what answers its jobs (called once the turn is given back). */
  private async runGroup(group: Job<Tx>[]): Promise<() => void> {
    const d = this.driver;
    const outcomes: Array<{ ok: true; value: unknown } | { ok: false; error: unknown }> = [];
    let open = false;
    /** Jobs that succeeded in the open transaction. */
    let kept = 0;
    for (const job of group) {
      if (!open) {
        try {
          d.begin();
          open = true;
        } catch (error) {
          // Nothing is pending (kept is 0 whenever no transaction is open): fail what is left.
          for (let i = outcomes.length; i < group.length; i++) outcomes.push({ ok: false, error });
          break;
        }
      }
      // A savepoint costs a copy of every page the job touches (to roll back to); the first job
      // of a transaction does without one, since a failure there rolls back the whole transaction.
      const savepoint = kept > 0;
      if (savepoint) d.savepoint();
      try {
        const value = await job.fn(d.tx);
        if (savepoint) d.release();
        outcomes.push({ ok: true, value });
        kept++;
      } catch (error) {
        if (savepoint) {
          d.rollbackToSavepoint();
          d.release();
        } else {
          try { d.rollback(); } catch { /* already rolled back */ }
          open = false;
        }
        d.onJobAborted();
        outcomes.push({ ok: false, error });
      }
    }
    if (open) {
      try {
        d.commit();
        d.onGroupCommitted();
      } catch (error) {
        try { d.rollback(); } catch { /* already rolled back */ }
        d.onJobAborted();
        return () => group.forEach((j) => j.reject(error));
      }
    }
    const answer = () => group.forEach((job, i) => {
      const o = outcomes[i]!;
      if (o.ok) job.resolve(o.value);
      else job.reject(o.error);
    });
    if (!d.flush) return answer;
    const flushed = d.flush();
    return () => { flushed.then(answer, (error: unknown) => group.forEach((j) => j.reject(error))); };
  }
}

/**
 * Turns at the SQLite write lock between the server's writer (on the event loop) and a second
 * writer connection on another thread (the audit writer).
 *
 * SQLite lets one connection write at a time; one that finds the lock taken sleeps in its busy
 * handler (1, 2, 5, 10 ms ...). On the event loop that sleep stops the whole server, so without
 * turns the second writer had to keep its transactions short, and short transactions are what
 * made the audit trail expensive: each commit writes its dirty pages again and empties the page
 * cache of every other connection (measured: reads 2,389-2,717/s with 64 AuditEvents per commit,
 * 2,908-2,948/s with 256; 2,919-2,927/s with the trail off).
 *
 * With turns, the server's writer announces that it wants the lock and waits for it without
 * blocking the event loop; the other writer lets it go first and, while in a transaction, commits
 * early as soon as it is wanted. So the other writer can write large transactions when the server
 * is not writing, and the server's writes wait at most for one step of it.
 *
 * Two Int32 flags in shared memory, set and read with sequentially consistent Atomics: each side
 * sets its own flag before it looks at the other's, so at least one of the two sees the other.
 */
const MAIN_WANTS = 0;
const OTHER_HOLDS = 1;
/** A thread that stopped while it held its flag must not stop the server's writes for good. */
const MAIN_WAIT_LIMIT_MS = 2_000;
const OTHER_WAIT_STEP_MS = 100;

/** Atomics.waitAsync (V8, Node 16+), which the ES2023 lib does not declare. */
const waitAsync = (Atomics as unknown as {
  waitAsync(a: Int32Array, index: number, value: number, timeoutMs: number): { async: false; value: string } | { async: true; value: Promise<string> };
}).waitAsync;

export class WriterTurns {
  private readonly flags: Int32Array;

  constructor(readonly buffer: SharedArrayBuffer = new SharedArrayBuffer(8)) {
    this.flags = new Int32Array(buffer);
  }

  /**
   * The server's writers, before BEGIN: resolves once the other writer is out of its transaction.
   * MAIN_WANTS counts them (the write queue's connection, the ledger's).
   */
  async mainAcquire(): Promise<void> {
    Atomics.add(this.flags, MAIN_WANTS, 1);
    const deadline = Date.now() + MAIN_WAIT_LIMIT_MS;
    while (Atomics.load(this.flags, OTHER_HOLDS) === 1) {
      const left = deadline - Date.now();
      if (left <= 0) return; // SQLite's busy handler takes over from here.
      const w = waitAsync(this.flags, OTHER_HOLDS, 1, left);
      if (w.async) await w.value;
    }
  }

  /** The server's writer, after COMMIT or ROLLBACK. */
  mainRelease(): void {
    if (Atomics.sub(this.flags, MAIN_WANTS, 1) === 1) Atomics.notify(this.flags, MAIN_WANTS);
  }

  /** The other writer, before BEGIN (blocks its thread): waits while the server's writer wants the lock. */
  otherAcquire(): void {
    for (;;) {
      for (let n = Atomics.load(this.flags, MAIN_WANTS); n !== 0; n = Atomics.load(this.flags, MAIN_WANTS)) Atomics.wait(this.flags, MAIN_WANTS, n, OTHER_WAIT_STEP_MS);
      Atomics.store(this.flags, OTHER_HOLDS, 1);
      if (Atomics.load(this.flags, MAIN_WANTS) === 0) return;
      // Both asked at once: the server's writer goes first.
      this.otherRelease();
    }
  }

  /** A few statements of one of the server's other connections (the ledger's), in a turn. */
  async mainTurn<T>(fn: () => T): Promise<T> {
    await this.mainAcquire();
    try {
      return fn();
    } finally {
      this.mainRelease();
    }
  }

  /** The other writer, after COMMIT or ROLLBACK. */
  otherRelease(): void {
    Atomics.store(this.flags, OTHER_HOLDS, 0);
    Atomics.notify(this.flags, OTHER_HOLDS);
  }

  /** For the other writer inside its transaction: the server's writer is waiting, commit now. */
  get mainWaiting(): boolean {
    return Atomics.load(this.flags, MAIN_WANTS) !== 0;
  }
}

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WriteQueue, type GroupCommitDriver } from '../src/store/write-queue.js';

/** A driver that records the calls the queue makes. */
function recorder(failBegin = false): { log: string[]; driver: GroupCommitDriver<null> } {
  const log: string[] = [];
  const call = (name: string) => () => { log.push(name); };
  return {
    log,
    driver: {
      begin: () => {
        log.push('begin');
        if (failBegin) throw new Error('busy');
      },
      commit: call('commit'),
      rollback: call('rollback'),
      savepoint: call('savepoint'),
      release: call('release'),
      rollbackToSavepoint: call('rollbackTo'),
      flush: async () => { log.push('flush'); },
      onJobAborted: call('aborted'),
      onGroupCommitted: call('committed'),
      tx: null,
    },
  };
}

describe('write queue (group commit)', () => {
  it('runs the first job of a transaction without a savepoint and the others inside one', async () => {
    const { log, driver } = recorder();
    const q = new WriteQueue(driver);
    const job = (name: string) => q.run(async () => { log.push(name); return name; });
    assert.deepEqual(await Promise.all([job('a'), job('b'), job('c')]), ['a', 'b', 'c']);
    assert.deepEqual(log, ['begin', 'a', 'savepoint', 'b', 'release', 'savepoint', 'c', 'release', 'commit', 'committed', 'flush']);
  });

  it('rolls back the whole transaction when its first job fails, and begins again for the rest', async () => {
    const { log, driver } = recorder();
    const q = new WriteQueue(driver);
    const results = await Promise.allSettled([
      q.run(async () => { log.push('a'); throw new Error('a failed'); }),
      q.run(async () => { log.push('b'); }),
      q.run(async () => { log.push('c'); throw new Error('c failed'); }),
      q.run(async () => { log.push('d'); }),
    ]);
    assert.deepEqual(results.map((r) => r.status), ['rejected', 'fulfilled', 'rejected', 'fulfilled']);
    assert.deepEqual(log, [
      'begin', 'a', 'rollback', 'aborted',
      'begin', 'b',
      'savepoint', 'c', 'rollbackTo', 'release', 'aborted',
      'savepoint', 'd', 'release',
      'commit', 'committed', 'flush',
    ]);
  });

  it('fails the jobs it cannot begin a transaction for', async () => {
    const { driver } = recorder(true);
    const q = new WriteQueue(driver);
    const results = await Promise.allSettled([q.run(async () => 1), q.run(async () => 2)]);
    assert.deepEqual(results.map((r) => r.status), ['rejected', 'rejected']);
  });
});

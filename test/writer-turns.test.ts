import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import { WriterTurns } from '../src/store/index.js';
import { WriteQueue, type GroupCommitDriver } from '../src/store/write-queue.js';

/** A thread that plays the other writer: it takes and gives back its turn when told. */
function otherWriter(buffer: SharedArrayBuffer): Worker {
  const turnsUrl = new URL('../src/store/sqlite/writer-turns.ts', import.meta.url).href;
  const code = `import('tsx/esm/api').then(async (t) => {
    t.register();
    const { WriterTurns } = await import(${JSON.stringify(turnsUrl)});
    const { workerData, parentPort } = await import('node:worker_threads');
    const turns = new WriterTurns(workerData.buffer);
    parentPort.on('message', (m) => {
      if (m === 'acquire') { turns.otherAcquire(); parentPort.postMessage('held'); }
      if (m === 'release') { turns.otherRelease(); parentPort.postMessage('released'); }
      if (m === 'waiting?') parentPort.postMessage(turns.mainWaiting);
    });
    parentPort.postMessage('ready');
  });`;
  return new Worker(code, { eval: true, workerData: { buffer } });
}

async function ask(w: Worker, m: string): Promise<unknown> {
  w.postMessage(m);
  const [reply] = await once(w, 'message');
  return reply;
}

describe('writer turns (the write lock between the server and the audit writer thread)', () => {
  const workers: Worker[] = [];
  after(async () => { for (const w of workers) await w.terminate(); });

  async function start(turns: WriterTurns): Promise<Worker> {
    const w = otherWriter(turns.buffer);
    workers.push(w);
    assert.equal((await once(w, 'message'))[0], 'ready');
    return w;
  }

  it('the server waits for a turn the other writer holds without blocking its event loop, and goes as soon as it is given back', async () => {
    const turns = new WriterTurns();
    const other = await start(turns);
    assert.equal(await ask(other, 'acquire'), 'held');

    let acquired = false;
    const acquiring = turns.mainAcquire().then(() => { acquired = true; });
    let ticks = 0;
    const timer = setInterval(() => { ticks++; }, 5);
    await new Promise((r) => setTimeout(r, 100));
    clearInterval(timer);
    assert.equal(acquired, false, 'not while the other writer holds its turn');
    assert.ok(ticks >= 3, `the event loop kept running while waiting (${ticks} ticks)`);
    assert.equal(await ask(other, 'waiting?'), true, 'the other writer sees that the server waits');

    assert.equal(await ask(other, 'release'), 'released');
    await acquiring;
    assert.equal(acquired, true);
    turns.mainRelease();
    assert.equal(await ask(other, 'waiting?'), false);
  });

  it('the other writer waits while the server wants the lock, and gets it once the server is done', async () => {
    const turns = new WriterTurns();
    const other = await start(turns);
    await turns.mainAcquire();
    other.postMessage('acquire');
    const held = once(other, 'message');
    let got = false;
    void held.then(() => { got = true; });
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(got, false, 'the other writer does not start while the server holds its turn');
    turns.mainRelease();
    assert.equal((await held)[0], 'held');
    assert.equal(await ask(other, 'release'), 'released');
  });

  it('counts the server\'s writers (its write queue and the ledger\'s connection): the other writer waits until all are done', async () => {
    const turns = new WriterTurns();
    const other = await start(turns);
    await turns.mainAcquire();
    let ledgerRan = false;
    await turns.mainTurn(() => { ledgerRan = true; });
    assert.equal(ledgerRan, true);
    assert.equal(turns.mainWaiting, true, 'the write queue still holds its turn after the ledger gave its own back');
    other.postMessage('acquire');
    const held = once(other, 'message');
    let got = false;
    void held.then(() => { got = true; });
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(got, false);
    turns.mainRelease();
    assert.equal((await held)[0], 'held');
    assert.equal(await ask(other, 'release'), 'released');
  });

  it('a write queue with turns takes its turn before BEGIN and gives it back after COMMIT, also when the group fails', async () => {
    const turns = new WriterTurns();
    const log: string[] = [];
    let failBegin = false;
    const driver: GroupCommitDriver<null> = {
      begin: () => { log.push(`begin waiting=${turns.mainWaiting}`); if (failBegin) throw new Error('busy'); },
      commit: () => { log.push('commit'); },
      rollback: () => { log.push('rollback'); },
      savepoint: () => {}, release: () => {}, rollbackToSavepoint: () => {},
      onJobAborted: () => {}, onGroupCommitted: () => {},
      beforeBegin: () => turns.mainAcquire(),
      afterEnd: () => { turns.mainRelease(); log.push(`end waiting=${turns.mainWaiting}`); },
      tx: null,
    };
    const q = new WriteQueue(driver);
    assert.equal(await q.run(async () => 7), 7);
    assert.deepEqual(log, ['begin waiting=true', 'commit', 'end waiting=false']);
    log.length = 0;
    failBegin = true;
    await assert.rejects(q.run(async () => 8), /busy/);
    assert.deepEqual(log, ['begin waiting=true', 'end waiting=false']);
  });
});

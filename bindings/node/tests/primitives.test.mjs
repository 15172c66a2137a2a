// Every primitive from Node.js: acquire/tryAcquire/release, timeouts and error codes,
// AbortSignal, reader-writer locks, semaphores, cede, inspect, the one-line lock.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { mkdtempSync, rmSync } from 'node:fs'

const require = createRequire(import.meta.url)
const latchkey = require('../index.js')

async function freshScope() {
  const dir = mkdtempSync('/tmp/latchkey-node-')
  const scope = await latchkey.open(`host:${dir}`)
  return { scope, url: `host:${dir}`, done: () => rmSync(dir, { recursive: true, force: true }) }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function until(check) {
  for (let i = 0; i < 3000 && !(await check()); i++) await sleep(10)
  assert.ok(await check(), 'not within 30 s')
}

test('a mutex: acquire, tryAcquire, a timeout with code 8403, release, greater tokens', async () => {
  const { scope, done } = await freshScope()
  const held = await scope.acquire('db', { timeout: 1000 })
  assert.ok(held.fencingToken > 0n)
  assert.equal(await scope.isLocked('db'), true)
  assert.equal(await scope.tryAcquire('db'), null)
  await assert.rejects(scope.acquire('db', { timeout: 30 }), (e) => e instanceof latchkey.LatchkeyError && e.code === 8403 && /db/.test(e.message))
  assert.equal((await scope.inspect('db')).waiters, 0, 'a timed-out request stayed queued')
  await scope.release(held)
  assert.equal(await scope.isLocked('db'), false)
  const again = await scope.acquire('db')
  assert.ok(again.fencingToken > held.fencingToken)
  await again.release()
  await assert.rejects(again.release(), (e) => e.code === latchkey.CODES.NOT_HELD)
  done()
})

test('an AbortSignal gives a wait up and withdraws its request', async () => {
  const { scope, done } = await freshScope()
  const held = await scope.acquire('job')
  const controller = new AbortController()
  const waiting = scope.acquire('job', { signal: controller.signal })
  await until(async () => (await scope.inspect('job')).waiters === 1)
  controller.abort()
  await assert.rejects(waiting, (e) => e.name === 'AbortError')
  await until(async () => (await scope.inspect('job')).waiters === 0)
  await held.release()
  await assert.rejects(scope.acquire('job', { signal: AbortSignal.abort() }), (e) => e.name === 'AbortError')
  done()
})

test('the event loop runs while a wait waits, and a release wakes the waiter', async () => {
  const { scope, done } = await freshScope()
  const held = await scope.acquire('turn')
  let ticks = 0
  const timer = setInterval(() => ticks++, 5)
  const waiting = scope.acquire('turn', { timeout: 30000 })
  await sleep(100)
  assert.ok(ticks >= 5, `the event loop was blocked (${ticks} ticks)`)
  await held.release()
  const granted = await waiting
  clearInterval(timer)
  assert.ok(granted.fencingToken > held.fencingToken)
  await granted.release()
  done()
})

test('reader-writer locks: readers share, a waiting writer holds back later readers', async () => {
  const { scope, done } = await freshScope()
  const rw = await scope.rwlock('report')
  const r1 = await rw.read.acquire()
  const r2 = await scope.acquire('report', { shared: true })
  assert.equal(await rw.write.tryAcquire(), null)
  const writing = scope.acquire('report', { exclusive: true })
  await until(async () => (await scope.inspect('report')).waitingExclusive === 1)
  assert.equal(await rw.read.tryAcquire(), null, 'a reader passed a waiting writer')
  await r1.release()
  await r2.release()
  const writer = await writing
  assert.equal((await scope.inspect('report')).inUse, latchkey.RWLOCK_CAPACITY)
  await writer.release()
  done()
})

test('a semaphore of n grants k of n; a capacity mismatch is code 8410', async () => {
  const { scope, done } = await freshScope()
  const sem = await scope.semaphore('gpu', 3)
  const two = await sem.acquire({ permits: 2 })
  const one = await scope.tryAcquire('gpu', { capacity: 3, permits: 1 })
  assert.ok(one !== null && two.permits === 2)
  assert.equal(await sem.tryAcquire(), null)
  await assert.rejects(scope.semaphore('gpu', 4), (e) => e.code === 8410)
  await two.release()
  await one.release()
  assert.equal(await sem.guard(async () => (await scope.inspect('gpu')).inUse), 1)
  done()
})

test('an interval lock cedes to a waiter and is granted again after it', async () => {
  const { scope, done } = await freshScope()
  const slice = await scope.intervalLock('slice')
  const held = await slice.acquire()
  const first = held.fencingToken
  await held.cede() // nobody waits: kept
  assert.ok(held.fencingToken >= first)
  const waiting = slice.acquire()
  await until(async () => (await scope.inspect('slice')).waiters === 1)
  const ceding = held.cede()
  const theirs = await waiting
  assert.ok(theirs.fencingToken > first)
  await theirs.release()
  await ceding
  assert.ok(held.fencingToken > theirs.fencingToken)
  await held.release()
  done()
})

test('bad input gets codes: invalid names 8405, scopes 8412', async () => {
  const { scope, done } = await freshScope()
  await assert.rejects(scope.acquire(''), (e) => e.code === 8405)
  await assert.rejects(latchkey.open('nosuch://x'), (e) => e.code === 8412)
  done()
})

test('the one-line lock', async () => {
  const { url, scope, done } = await freshScope()
  const handle = await latchkey.lock('one-line', { scope: url })
  assert.equal(await scope.isLocked('one-line'), true)
  await handle.release()
  done()
})

test('a cede that waits is given up by its AbortSignal, and the lock with it', { timeout: 60_000 }, async () => {
  const { scope, done } = await freshScope()
  const slice = await scope.intervalLock('abort-cede')
  const held = await slice.acquire()
  const waiting = slice.acquire()
  await until(async () => (await scope.inspect('abort-cede')).waiters === 1)
  const controller = new AbortController()
  const ceding = held.cede({ signal: controller.signal })
  const theirs = await waiting // handed over; our cede now waits behind them
  await until(async () => (await scope.inspect('abort-cede')).waiters === 1)
  controller.abort()
  await assert.rejects(ceding, (e) => e.name === 'AbortError')
  await until(async () => (await scope.inspect('abort-cede')).waiters === 0)
  await theirs.release()
  assert.equal(await scope.isLocked('abort-cede'), false, 'the aborted cede was granted again')
  await assert.rejects(held.release(), (e) => e.code === 8404)
  done()
})

test('a cede whose signal is already aborted gives the lock up too', { timeout: 60_000 }, async () => {
  const { scope, done } = await freshScope()
  const held = await scope.acquire('abort-before-cede')
  const controller = new AbortController()
  controller.abort()
  await assert.rejects(held.cede({ signal: controller.signal }), (e) => e.name === 'AbortError')
  assert.equal(await scope.isLocked('abort-before-cede'), false, 'kept after an aborted cede')
  await assert.rejects(held.release(), (e) => e.code === 8404)
  done()
})

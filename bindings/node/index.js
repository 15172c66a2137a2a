'use strict'
// latchkey for Node.js and Deno: named locks shared by async code, worker threads,
// processes (and, with etcd://, postgres:// or redis:// scopes, machines). A lock taken
// here is the same lock for a Python program, a Rust program or a shell script (`latchkey
// run`) on the same scope. Nothing here blocks the event loop.
//
//   const latchkey = require('latchkey')
//   const scope = await latchkey.open('host:')
//   const lock = await scope.acquire('db-migrations', { timeout: 5000 })
//   try { await migrate(lock.fencingToken) } finally { await lock.release() }

const native = require('./native.js')

const RWLOCK_CAPACITY = native.RWLOCK_CAPACITY

/** A latchkey error: `code` is its stable number (8403: timed out, 8405: invalid name...). */
class LatchkeyError extends Error {
  constructor(code, message) {
    super(message)
    this.name = 'LatchkeyError'
    this.code = code
  }
}

const CODES = {
  GENERIC: 8400, ACQUIRE_FAILED: 8401, RELEASE_FAILED: 8402, TIMEOUT: 8403, NOT_HELD: 8404,
  INVALID_NAME: 8405, HANDLE_LOST: 8406, UNAVAILABLE: 8407, UNSUPPORTED: 8408,
  PERMISSION_DENIED: 8409, CAPACITY_MISMATCH: 8410, CLOSED: 8411, INVALID_SCOPE: 8412, CORRUPTED: 8413,
}

function fromNative(error) {
  const found = /^\[(\d+)\] ([\s\S]*)$/.exec(error && error.message)
  return found ? new LatchkeyError(Number(found[1]), found[2]) : error
}

/** Calls a native method whose last argument is a Node-style callback, as a promise. */
function call(target, method, ...args) {
  return new Promise((resolve, reject) => {
    target[method](...args, (error, value) => (error ? reject(fromNative(error)) : resolve(value)))
  })
}

function abortError(signal) {
  const reason = signal.reason
  return reason instanceof Error ? reason : Object.assign(new Error('the wait was aborted'), { name: 'AbortError' })
}

/** Permits held: `fencingToken` (a bigint), `release()`. */
class Handle {
  constructor(guard, scope) {
    this._guard = guard
    this._scope = scope
    this.fencingToken = BigInt(guard.fencingToken)
    this.permits = guard.permits
  }
  /** Gives the permits back. */
  async release() {
    if (this._scope._local) {
      // A few writes to memory: done here rather than on another thread.
      try {
        return this._guard.releaseNow()
      } catch (error) {
        throw fromNative(error)
      }
    }
    return call(this._guard, 'release')
  }
  /** Whether the hold is known to be lost (a session over a network ended). */
  isLost() {
    return this._guard.isLost()
  }
  /**
   * If anybody waits, hands over and waits to be granted again (a new fencing token).
   * `signal` (an AbortSignal) gives the wait up, and with it the lock.
   */
  async cede({ signal } = {}) {
    if (signal && signal.aborted) {
      // Given up before it began: the lock goes with it, as it would a moment later.
      await call(this._guard, 'release').catch(() => {})
      throw abortError(signal)
    }
    // Aborted, but granted again first: given up, as an aborted cede is.
    const late = (error) => error || this._guard.release(() => {})
    await abortable(signal, (done) => this._guard.cede(done), late)
    this.fencingToken = BigInt(this._guard.fencingToken)
  }
}

/** Waits for `permits` of a native lock; `timeout` in ms, `signal` an AbortSignal. */
function wait(lock, permits, { timeout, signal } = {}) {
  const ms = timeout === undefined || timeout === null ? -1 : timeout
  // Aborted, but granted first: give it back.
  const late = (error, guard) => guard && guard.release(() => {})
  return abortable(signal, (done) => lock.acquire(permits, ms, done), late)
}

/**
 * Starts a native wait, `start(done)`, which returns its `Pending`, and settles with its
 * answer; `signal` (an AbortSignal) cancels it and rejects with its reason. An answer
 * that comes after the abort goes to `late(error, value)`.
 */
function abortable(signal, start, late) {
  if (signal && signal.aborted) return Promise.reject(abortError(signal))
  return new Promise((resolve, reject) => {
    let settled = false
    const onAbort = () => {
      if (settled) return
      settled = true
      pending.cancel()
      reject(abortError(signal))
    }
    const pending = start((error, value) => {
      if (signal) signal.removeEventListener('abort', onAbort)
      if (settled) return late(error, value)
      settled = true
      if (error) reject(fromNative(error))
      else resolve(value)
    })
    if (signal) signal.addEventListener('abort', onAbort, { once: true })
  })
}

/** A lock of a scope: a mutex, a read or write of an RW lock, or permits of a semaphore. */
class Lock {
  constructor(lock, scope, permits) {
    this._lock = lock
    this._scope = scope
    this._permits = permits
  }
  get name() {
    return this._lock.name
  }
  /** Waits until granted (`{ timeout, signal }`); resolves to a Handle. */
  async acquire(options = {}) {
    const permits = options.permits ?? this._permits
    if (this._scope._local && !(options.signal && options.signal.aborted)) {
      // A scope of this machine answers a try at once: no wait, no other thread.
      let guard
      try {
        guard = this._lock.tryAcquireNow(permits)
      } catch (error) {
        throw fromNative(error)
      }
      if (guard) return new Handle(guard, this._scope)
    }
    return new Handle(await wait(this._lock, permits, options), this._scope)
  }
  /** A Handle if free and nobody waits, else null. */
  async tryAcquire(options = {}) {
    const guard = await call(this._lock, 'tryAcquire', options.permits ?? this._permits)
    return guard ? new Handle(guard, this._scope) : null
  }
  /** Runs `fn` while holding the lock; resolves to what it resolves to. */
  async guard(fn, options = {}) {
    const handle = await this.acquire(options)
    try {
      return await fn(handle)
    } finally {
      await handle.release()
    }
  }
}

/** The namespace of the locks of a URL. */
class Scope {
  constructor(scope) {
    this._scope = scope
    // Scopes of this machine answer tries and releases at once (see Lock.acquire).
    this._local = /^(host|process):/.test(scope.url)
  }
  get url() {
    return this._scope.url
  }
  async _open(name, capacity) {
    return call(this._scope, 'openLock', name, capacity)
  }
  /** The mutex `name`. */
  async mutex(name) {
    return new Lock(await this._open(name, 1), this, 1)
  }
  /** The reader-writer lock `name`: `read` and `write` are its two locks. */
  async rwlock(name) {
    const lock = await this._open(name, RWLOCK_CAPACITY)
    return { read: new Lock(lock, this, 1), write: new Lock(lock, this, RWLOCK_CAPACITY) }
  }
  /** The FIFO semaphore `name` of `n` permits (`acquire({ permits: k })`). */
  async semaphore(name, n) {
    return new Lock(await this._open(name, n), this, 1)
  }
  /** The interval lock `name`: a mutex whose handle `cede()`s to waiters. */
  async intervalLock(name) {
    return this.mutex(name)
  }
  /** The options' lock: `{ shared: true }` a read, `{ exclusive: true }` a write of an RW
   * lock, `{ capacity, permits }` a semaphore's permits, else a mutex. */
  async _lockOf(name, options) {
    if (options.shared) return (await this.rwlock(name)).read
    if (options.exclusive) return (await this.rwlock(name)).write
    if (options.capacity) return new Lock(await this._open(name, options.capacity), this, options.permits ?? 1)
    return this.mutex(name)
  }
  /** Waits for `name` (`{ timeout, signal, shared, exclusive, capacity, permits }`);
   * resolves to a Handle with `release()` and `fencingToken`. */
  async acquire(name, options = {}) {
    return (await this._lockOf(name, options)).acquire(options)
  }
  /** A Handle if `name` is free and nobody waits, else null. */
  async tryAcquire(name, options = {}) {
    return (await this._lockOf(name, options)).tryAcquire(options)
  }
  /** Gives a Handle back. */
  release(handle) {
    return handle.release()
  }
  /** Whether anybody holds `name`. */
  isLocked(name) {
    return call(this._scope, 'isLocked', name)
  }
  /** A snapshot of `name`: capacity, inUse, waiters, holders, lastToken. */
  async inspect(name) {
    return JSON.parse(await call(this._scope, 'inspect', name))
  }
  /** Closes the scope (its session ends, for scopes over a network). */
  close() {
    return call(this._scope, 'close')
  }
}

/** Opens the scope `url` names (`host:`, `process:`, `etcd://…`, `postgres://…`, `redis://…`). */
async function open(url = 'host:') {
  return new Scope(await call(native.Scope, 'open', url))
}

/** Scopes opened by `lock`, by URL: one each, kept (a scope over a network is a session). */
const opened = new Map()

/** The mutex `name` of the host scope (or `options.scope`), in one line. */
async function lock(name, options = {}) {
  const url = options.scope || 'host:'
  if (!opened.has(url)) {
    const scope = open(url)
    opened.set(url, scope)
    scope.catch(() => opened.delete(url))
  }
  return (await opened.get(url)).acquire(name, options)
}

module.exports = { open, lock, Scope, Lock, Handle, LatchkeyError, CODES, RWLOCK_CAPACITY }

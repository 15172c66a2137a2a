/** latchkey for Node.js and Deno: named locks shared by async code, processes and machines. */

export declare const RWLOCK_CAPACITY: number

/** Stable error codes (8400-8413). */
export declare const CODES: {
  GENERIC: 8400; ACQUIRE_FAILED: 8401; RELEASE_FAILED: 8402; TIMEOUT: 8403; NOT_HELD: 8404
  INVALID_NAME: 8405; HANDLE_LOST: 8406; UNAVAILABLE: 8407; UNSUPPORTED: 8408
  PERMISSION_DENIED: 8409; CAPACITY_MISMATCH: 8410; CLOSED: 8411; INVALID_SCOPE: 8412; CORRUPTED: 8413
}

export declare class LatchkeyError extends Error {
  /** 8403 when a wait timed out, 8405 for an invalid name, ... (see CODES). */
  readonly code: number
}

export interface WaitOptions {
  /** Milliseconds; without it the wait goes on until granted or aborted. */
  timeout?: number
  /** Aborting it gives the wait up and withdraws the request. */
  signal?: AbortSignal
  /** Permits to take (a semaphore's k). */
  permits?: number
}

export interface AcquireOptions extends WaitOptions {
  /** A read of the reader-writer lock `name`. */
  shared?: boolean
  /** A write of the reader-writer lock `name`. */
  exclusive?: boolean
  /** A semaphore of `capacity` permits. */
  capacity?: number
}

export declare class Handle {
  /** Strictly greater than every earlier grant's of the name in the scope. */
  fencingToken: bigint
  readonly permits: number
  release(): Promise<void>
  isLost(): boolean
  /**
   * If anybody waits, hands over and waits to be granted again (a new fencing token).
   * `signal` gives the wait up, and with it the lock (rejects with its reason).
   */
  cede(options?: { signal?: AbortSignal }): Promise<void>
}

export declare class Lock {
  readonly name: string
  acquire(options?: WaitOptions): Promise<Handle>
  tryAcquire(options?: { permits?: number }): Promise<Handle | null>
  guard<T>(fn: (handle: Handle) => T | Promise<T>, options?: WaitOptions): Promise<T>
}

export interface State {
  name: string
  capacity: number
  inUse: number
  waiters: number
  waitingExclusive: number
  lastToken: string
  holders: { pid: number; permits: number }[]
}

export declare class Scope {
  readonly url: string
  mutex(name: string): Promise<Lock>
  rwlock(name: string): Promise<{ read: Lock; write: Lock }>
  semaphore(name: string, n: number): Promise<Lock>
  intervalLock(name: string): Promise<Lock>
  acquire(name: string, options?: AcquireOptions): Promise<Handle>
  tryAcquire(name: string, options?: AcquireOptions): Promise<Handle | null>
  release(handle: Handle): Promise<void>
  isLocked(name: string): Promise<boolean>
  inspect(name: string): Promise<State>
  close(): Promise<void>
}

/** Opens the scope `url` names: "host:" (default), "process:", "etcd://…", "postgres://…", "redis://…". */
export declare function open(url?: string): Promise<Scope>
/** The mutex `name` of the host scope (or `options.scope`), in one line. */
export declare function lock(name: string, options?: AcquireOptions & { scope?: string }): Promise<Handle>

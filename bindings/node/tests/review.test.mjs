// What an adversarial review of the Node.js binding found, each a test that failed before
// its fix: an infinite timeout aborted the process; inspect() of some names threw.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { mkdtempSync, rmSync } from 'node:fs'

const require = createRequire(import.meta.url)
const latchkey = require('../index.js')

test('an infinite or huge timeout waits for good', async () => {
  const dir = mkdtempSync('/tmp/latchkey-node-r-')
  const scope = await latchkey.open(`host:${dir}`)
  const held = await scope.acquire('forever')
  for (const timeout of [Infinity, 1e300]) {
    const waiting = scope.acquire('forever', { timeout })
    await new Promise((resolve) => setTimeout(resolve, 50))
    await held.release()
    const granted = await waiting
    await granted.release()
    const again = await scope.acquire('forever')
    Object.assign(held, again)
  }
  await held.release()
  rmSync(dir, { recursive: true, force: true })
})

test('inspect() of names Rust would escape is JSON', async () => {
  const dir = mkdtempSync('/tmp/latchkey-node-r-')
  const scope = await latchkey.open(`host:${dir}`)
  for (const name of ['❤️', 'e\u0301', 'quote"back\\slash']) {
    const handle = await scope.acquire(name)
    const state = await scope.inspect(name)
    assert.equal(state.name, name)
    assert.equal(state.inUse, 1)
    await handle.release()
  }
  rmSync(dir, { recursive: true, force: true })
})

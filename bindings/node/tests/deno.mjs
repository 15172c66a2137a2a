// The same package in Deno (run by tests/deno.test.mjs with the `deno` of the npm registry):
// it loads, locks, times out with code 8403, and releases.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const latchkey = require('../index.js')

function check(condition, what) {
  if (!condition) throw new Error(`deno: ${what}`)
}

const dir = Deno.makeTempDirSync({ prefix: 'latchkey-deno-' })
const scope = await latchkey.open(`host:${dir}`)
const held = await scope.acquire('deno', { timeout: 1000 })
check(held.fencingToken > 0n, 'a fencing token')
check(await scope.isLocked('deno'), 'locked')
check((await scope.tryAcquire('deno')) === null, 'a try fails while held')
let code = 0
try {
  await scope.acquire('deno', { timeout: 20 })
} catch (e) {
  code = e.code
}
check(code === 8403, `a timeout is 8403, not ${code}`)
await held.release()
check(!(await scope.isLocked('deno')), 'free after the release')
Deno.removeSync(dir, { recursive: true })
console.log('deno ok')

// Across languages on one host namespace: a Python holder makes `latchkey run -n` fail with
// the conflict code and a Node.js waiter wait; when the Python process is SIGKILLed, the
// Node.js waiter is granted. Needs LATCHKEY_BIN (the latchkey command) and LATCHKEY_PYTHON
// (a Python with the latchkey package): scripts/test sets both.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createInterface } from 'node:readline'

const require = createRequire(import.meta.url)
const latchkey = require('../index.js')

test('a Python holder excludes the command and a Node.js waiter until it is killed', async () => {
  const cli = process.env.LATCHKEY_BIN
  const python = process.env.LATCHKEY_PYTHON
  assert.ok(cli && python, 'set LATCHKEY_BIN and LATCHKEY_PYTHON (scripts/test does)')
  const dir = mkdtempSync('/tmp/latchkey-node-x-')
  const url = `host:${dir}`
  const holder = spawn(python, ['-c', [
    'import sys, time, latchkey',
    'guard = latchkey.Scope(sys.argv[1]).mutex("shared").acquire()',
    'print("held", guard.fencing_token, flush=True)',
    'time.sleep(600)',
  ].join('\n'), url], { stdio: ['ignore', 'pipe', 'inherit'] })
  const [line] = await new Promise((resolve) => createInterface({ input: holder.stdout }).once('line', (l) => resolve([l])))
  const held = BigInt(line.split(' ')[1])
  const busy = spawnSync(cli, ['run', '--scope', url, '-n', 'shared', '--', 'true'])
  assert.equal(busy.status, 75, String(busy.stderr))
  const scope = await latchkey.open(url)
  const waiting = scope.acquire('shared', { timeout: 60000 })
  for (let i = 0; i < 3000 && (await scope.inspect('shared')).waiters === 0; i++) {
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  holder.kill('SIGKILL')
  const granted = await waiting
  assert.ok(granted.fencingToken > held, `token ${granted.fencingToken} after ${held}`)
  await granted.release()
  rmSync(dir, { recursive: true, force: true })
})

// Runs tests/deno.mjs in Deno: the `deno` package of the npm registry provides its binary
// (scripts/test installs it into bindings/node/node_modules).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

test('the package loads and locks in Deno', () => {
  const deno = fileURLToPath(new URL('../node_modules/.bin/deno', import.meta.url))
  assert.ok(existsSync(deno), 'no deno: npm install deno in bindings/node (scripts/test does)')
  const script = fileURLToPath(new URL('./deno.mjs', import.meta.url))
  const run = spawnSync(deno, ['run', '--allow-read', '--allow-write', '--allow-ffi', '--allow-env', '--allow-sys', script], { encoding: 'utf8' })
  assert.equal(run.status, 0, run.stdout + run.stderr)
  assert.match(run.stdout, /deno ok/)
})

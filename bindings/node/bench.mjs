// Node.js benchmark of latchkey (`node bindings/node/bench.mjs`): an uncontended acquire
// and release of a host-scope mutex against proper-lockfile (the cross-process lock
// Node.js users pick) and async-mutex (one process only, for reference), in the same run.
// Prints one JSON object per line, as `compare --json` does: case, ours_ns, peer, peer_ns
// (and the ratio). Needs `npm install --no-save proper-lockfile async-mutex`.
//
// Each measurement is the median of 7 rounds of N cycles after a warm-up; ours and the
// peer alternate round by round.
import { createRequire } from 'node:module'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

const require = createRequire(import.meta.url)
const latchkey = require('./index.js')
const lockfile = require('proper-lockfile')
const { Mutex } = require('async-mutex')
const versionOf = (name) => require(`${name}/package.json`).version

const ROUNDS = 7

async function perCycle(cycle, n) {
  const start = process.hrtime.bigint()
  for (let i = 0; i < n; i++) await cycle()
  return Number(process.hrtime.bigint() - start) / n
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]

async function compare(caseName, ours, peerName, peer, n) {
  await perCycle(ours, Math.ceil(n / 10))
  await perCycle(peer, Math.ceil(n / 10))
  const mine = []
  const theirs = []
  for (let round = 0; round < ROUNDS; round++) {
    mine.push(await perCycle(ours, n))
    theirs.push(await perCycle(peer, n))
  }
  const row = { case: caseName, ours_ns: median(mine), peer: peerName, peer_ns: median(theirs) }
  row.ratio = Math.round((row.ours_ns / row.peer_ns) * 1000) / 1000
  console.log(JSON.stringify(row))
  return row
}

const dir = mkdtempSync('/tmp/latchkey-node-bench-')
const scope = await latchkey.open(`host:${dir}`)
const mutex = await scope.mutex('bench')
const ours = async () => {
  const handle = await mutex.acquire()
  await handle.release()
}
const file = join(dir, 'proper-lockfile')
writeFileSync(file, '')
const properLockfile = async () => {
  const release = await lockfile.lock(file)
  await release()
}
const row = await compare('node/uncontended/mutex', ours, `proper-lockfile ${versionOf('proper-lockfile')}`, properLockfile, 500)
const inProcess = new Mutex()
await compare('node/uncontended/mutex', ours, `async-mutex ${versionOf('async-mutex')} (one process only)`, async () => {
  const release = await inProcess.acquire()
  release()
}, 20000)
console.error(`note: node/uncontended/mutex: ours is ${(1 / row.ratio).toFixed(1)} times faster than proper-lockfile (target: at least 10)`)

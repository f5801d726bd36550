// A Redis Cluster for the scale-out rows, thrown away after them: three redis-server masters on
// free loopback ports, no persistence, each given a third of the 16,384 hash slots and introduced
// to the first (CLUSTER ADDSLOTSRANGE, CLUSTER MEET), so no redis-cli is needed.
import { spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'

const host = '127.0.0.1'
const thirds = [[0, 5460], [5461, 10922], [10923, 16383]]

/** A loopback port free at the time of asking (the kernel picks it). */
function freePort () {
  return new Promise((resolve, reject) => {
    const probe = createServer()
    probe.once('error', reject)
    probe.listen(0, host, () => {
      const { port } = probe.address()
      probe.close(() => resolve(port))
    })
  })
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** Calls `check` every 50 ms until it is true; a check that throws counts as false. */
async function until (what, check, timeout) {
  const deadline = Date.now() + timeout
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`redis cluster: timed out waiting for ${what}`)
    await pause(50)
  }
}

/**
 * Starts the cluster and resolves to `{ version, nodes, keyslot(key), indexOfSlot(slot), admins(),
 * stop() }`, or to `{ skipped }` when redis-server cannot be run. Every node started is stopped by
 * `stop()`, and killed if this process exits first (a failed run, Ctrl-C).
 */
export async function startRedisCluster () {
  const dir = mkdtempSync(join(tmpdir(), 'taskqueue-bench-cluster-'))
  const servers = []
  const admins = []
  const killAll = () => {
    for (const server of servers) {
      if (server.exitCode === null && server.signalCode === null) server.kill('SIGKILL')
    }
    rmSync(dir, { recursive: true, force: true })
  }
  process.once('exit', killAll)
  const stop = async () => {
    for (const admin of admins.splice(0)) admin.disconnect()
    await Promise.all(servers.map((server) => {
      if (server.exitCode !== null || server.signalCode !== null) return undefined
      const exited = new Promise((resolve) => server.once('exit', resolve))
      server.kill('SIGTERM')
      // A node that does not stop within 5 s is killed: the run must not leave one behind.
      const timer = setTimeout(() => server.kill('SIGKILL'), 5_000)
      return exited.finally(() => clearTimeout(timer))
    }))
    killAll()
    process.removeListener('exit', killAll)
  }

  try {
    const nodes = []
    for (let index = 0; index < thirds.length; index++) {
      const port = await freePort()
      const bus = await freePort()
      const nodeDir = join(dir, `node-${index}`)
      mkdirSync(nodeDir)
      const server = spawn('redis-server', [
        '--bind', host, '--port', String(port), '--cluster-enabled', 'yes', '--cluster-port', String(bus),
        '--cluster-config-file', 'nodes.conf', '--dir', nodeDir, '--save', '', '--appendonly', 'no'
      ], { stdio: 'ignore' })
      servers.push(server)
      const failed = new Promise((resolve) => {
        server.once('error', (error) => resolve(error.code === 'ENOENT' ? 'redis-server is not on the PATH' : error.message))
        server.once('exit', (code) => resolve(`redis-server exited with code ${code}`))
      })
      const admin = new Redis({ host, port, lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => 50 })
      admin.on('error', () => {})
      admins.push(admin)
      const answered = until(`node ${port} to answer`, async () => await admin.ping() === 'PONG', 10_000)
        .then(() => undefined, (error) => error.message)
      const reason = await Promise.race([failed, answered])
      if (reason !== undefined) {
        await stop()
        return { skipped: reason }
      }
      nodes.push({ host, port, bus })
    }
    for (let index = 0; index < nodes.length; index++) await admins[index].call('CLUSTER', 'ADDSLOTSRANGE', thirds[index][0], thirds[index][1])
    for (let index = 1; index < nodes.length; index++) await admins[0].call('CLUSTER', 'MEET', host, nodes[index].port, nodes[index].bus)
    // Every node must know the other two and see every slot served before a Cluster client connects.
    await until('every node to report cluster_state:ok', async () => {
      const infos = await Promise.all(admins.map((admin) => admin.call('CLUSTER', 'INFO')))
      return infos.every((info) => info.includes('cluster_state:ok') && info.includes(`cluster_known_nodes:${nodes.length}`))
    }, 20_000)
    const version = /redis_version:(\S+)/.exec(await admins[0].info('server'))?.[1] ?? 'unknown'

    return {
      version,
      nodes: nodes.map(({ host, port }) => ({ host, port })),
      /** The hash slot of `key` (of its `{tag}` when it has one), as the cluster computes it. */
      keyslot: async (key) => Number(await admins[0].call('CLUSTER', 'KEYSLOT', key)),
      /** Index of the master serving `slot`. */
      indexOfSlot: (slot) => thirds.findIndex(([first, last]) => slot >= first && slot <= last),
      /** A plain client of each master, in order: for INFO, DBSIZE and SCAN of one node. */
      admins: () => admins,
      stop
    }
  } catch (error) {
    await stop()
    throw error
  }
}

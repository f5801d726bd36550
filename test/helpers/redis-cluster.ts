// A throwaway Redis Cluster for the tests: three redis-server masters on loopback ports, each
// owning a third of the hash slots, started and joined with CLUSTER ADDSLOTSRANGE and CLUSTER MEET
// (no redis-cli needed). Each node keeps its cluster config and an append-only file in a temporary
// folder of its own, so a node that is stopped and started again rejoins with its slots and data.
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Cluster, Redis } from 'ioredis'
import { waitUntil } from './redis-children'

export interface ClusterNode {
  host: string
  port: number
  /** The first and last hash slot the node serves. */
  slots: [number, number]
}

export interface TestCluster {
  /** Startup nodes for `new Cluster()`. */
  nodes: Array<{ host: string, port: number }>
  /** A Cluster client, disconnected when the cluster closes. */
  client: () => Cluster
  /** The node serving the hash slot of `key`. */
  nodeOf: (key: string) => Promise<ClusterNode>
  /** Stops node `index` (SIGTERM: it writes its data out) and starts it again on the same port. */
  stopNode: (index: number) => Promise<void>
  startNode: (index: number) => Promise<void>
  close: () => Promise<void>
}

const host = '127.0.0.1'
const slotRanges: Array<[number, number]> = [[0, 5460], [5461, 10922], [10923, 16383]]

/** A loopback port that nothing listens on now. */
async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const probe = createServer()
    probe.once('error', reject)
    probe.listen(0, host, () => {
      const { port } = probe.address() as { port: number }
      probe.close(() => resolve(port))
    })
  })
}

/** Polls `check` until it holds; a check that throws (a node not up yet) counts as not yet. */
async function poll (what: string, check: () => Promise<boolean>, timeout: number): Promise<void> {
  await waitUntil(`redis cluster: ${what}`, async () => await check().catch(() => false), timeout, 50)
}

/** A plain connection to one node, for commands about the cluster itself. */
function nodeClient (port: number): Redis {
  const client = new Redis({ host, port, lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => 100 })
  client.on('error', () => {})
  return client
}

export async function startRedisCluster (): Promise<TestCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'taskqueue-cluster-'))
  const ports: Array<{ port: number, bus: number }> = []
  for (let index = 0; index < slotRanges.length; index++) ports.push({ port: await freePort(), bus: await freePort() })
  const servers: Array<ChildProcess | undefined> = ports.map(() => undefined)
  const admins = ports.map(({ port }) => nodeClient(port))
  const clients: Cluster[] = []

  const startNode = async (index: number): Promise<void> => {
    const { port, bus } = ports[index]
    const nodeDir = join(dir, `node-${index}`)
    mkdirSync(nodeDir, { recursive: true })
    servers[index] = spawn('redis-server', [
      '--bind', host, '--port', String(port), '--cluster-enabled', 'yes', '--cluster-port', String(bus),
      '--cluster-config-file', 'nodes.conf', '--dir', nodeDir, '--save', '', '--appendonly', 'yes',
      // A node that comes back may serve its slots again at once, without a replica to fail over to.
      '--cluster-node-timeout', '2000'
    ], { stdio: 'ignore' })
    await poll(`node ${port} to answer`, async () => await admins[index].ping() === 'PONG', 10_000)
  }
  const clusterOk = async (): Promise<boolean> => {
    const infos = await Promise.all(admins.map(async (admin) => await admin.call('CLUSTER', 'INFO') as string))
    return infos.every((info) => info.includes('cluster_state:ok') && info.includes(`cluster_known_nodes:${ports.length}`))
  }

  process.once('exit', () => {
    for (const server of servers) server?.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  })
  for (let index = 0; index < ports.length; index++) await startNode(index)
  for (let index = 0; index < ports.length; index++) await admins[index].call('CLUSTER', 'ADDSLOTSRANGE', slotRanges[index][0], slotRanges[index][1])
  for (let index = 1; index < ports.length; index++) await admins[0].call('CLUSTER', 'MEET', host, ports[index].port, ports[index].bus)
  await poll('the cluster to be ok', clusterOk, 20_000)

  return {
    nodes: ports.map(({ port }) => ({ host, port })),
    client () {
      const client = new Cluster([{ host, port: ports[0].port }])
      client.on('error', () => {})
      clients.push(client)
      return client
    },
    async nodeOf (key) {
      const slot = await admins[0].call('CLUSTER', 'KEYSLOT', key) as number
      const index = slotRanges.findIndex(([first, last]) => slot >= first && slot <= last)
      return { host, port: ports[index].port, slots: slotRanges[index] }
    },
    async stopNode (index) {
      const server = servers[index]
      servers[index] = undefined
      if (server === undefined || server.exitCode !== null) return
      const exited = new Promise((resolve) => server.once('exit', resolve))
      server.kill('SIGTERM')
      await exited
    },
    async startNode (index) {
      await startNode(index)
      await poll('the cluster to be ok again', clusterOk, 20_000)
    },
    async close () {
      for (const client of clients.splice(0)) client.disconnect()
      for (const admin of admins) admin.disconnect()
      await Promise.all(servers.map(async (server) => {
        if (server === undefined || server.exitCode !== null) return
        const exited = new Promise((resolve) => server.once('exit', resolve))
        server.kill('SIGTERM')
        await exited
      }))
      rmSync(dir, { recursive: true, force: true })
    }
  }
}

// A throwaway redis-server for the tests, on a unix socket in a temporary folder, unless
// REDIS_URL names one to use. Every test gets a key prefix of its own, so tests never see each
// other's keys and nothing is flushed.
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'

export interface RedisConnection {
  /** Queue options that reach the server. */
  connection: { unixSocketPath: string } | { url: string }
  /** A plain client for the test's own checks; closed with the server. */
  client: () => Redis
}

export interface OwnRedisServer extends RedisConnection {
  socketPath: string
  /** Stops the server; with `durable`, its data survives into the next start. */
  stop (): Promise<void>
  start (): Promise<void>
  /** Sends a signal to the server process (SIGSTOP freezes it, SIGCONT thaws it). */
  signal (signal: NodeJS.Signals): void
}

export function uniquePrefix (): string {
  return `tq-test-${randomBytes(6).toString('hex')}`
}

async function waitForPing (socketPath: string): Promise<void> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const probe = new Redis({ path: socketPath, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
    probe.on('error', () => {})
    try {
      await probe.connect()
      await probe.ping()
      probe.disconnect()
      return
    } catch {
      probe.disconnect()
      await new Promise((resolve) => setTimeout(resolve, 25))
    }
  }
  throw new Error(`redis-server did not answer on ${socketPath}`)
}

/**
 * Starts a redis-server of the test's own. `durable` keeps every write in an append-only file
 * synced at once, so that a restart loses nothing that was acknowledged.
 */
export async function startOwnRedis (options: { durable?: boolean, port?: number } = {}): Promise<OwnRedisServer & { close: () => Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'taskqueue-redis-'))
  const socketPath = join(dir, 'redis.sock')
  // `port`: also listens on 127.0.0.1, for the tests that need a redis:// url.
  const tcp = options.port === undefined ? ['--port', '0'] : ['--port', String(options.port), '--bind', '127.0.0.1']
  const args = [...tcp, '--unixsocket', socketPath, '--unixsocketperm', '700', '--dir', dir, '--save', '']
  args.push(...(options.durable === true ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no']))
  let server: ChildProcess | undefined
  const clients: Redis[] = []
  const own: OwnRedisServer = {
    socketPath,
    connection: { unixSocketPath: socketPath },
    client () {
      const client = new Redis({ path: socketPath })
      client.on('error', () => {})
      clients.push(client)
      return client
    },
    async start () {
      server = spawn('redis-server', args, { stdio: 'ignore' })
      await waitForPing(socketPath)
    },
    signal (signal) {
      server?.kill(signal)
    },
    async stop () {
      const running = server
      server = undefined
      if (running === undefined || running.exitCode !== null) return
      const exited = new Promise((resolve) => running.once('exit', resolve))
      // A server a test froze (SIGSTOP) must run again to take the SIGTERM.
      running.kill('SIGCONT')
      running.kill('SIGTERM')
      await exited
    }
  }
  await own.start()
  process.once('exit', () => {
    server?.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  })
  return {
    ...own,
    /** Stops the server for good, with the clients made for the test. */
    close: async () => {
      for (const client of clients.splice(0)) client.disconnect()
      await own.stop()
    }
  }
}

/** The server the tests use: REDIS_URL when set, else a throwaway one. */
export async function testRedis (): Promise<RedisConnection & { close: () => Promise<void> }> {
  const url = process.env.REDIS_URL
  if (url !== undefined && url !== '') {
    const clients: Redis[] = []
    return {
      connection: { url },
      client () {
        const client = new Redis(url)
        clients.push(client)
        return client
      },
      async close () { for (const client of clients) client.disconnect() }
    }
  }
  return await startOwnRedis()
}

/**
 * The messages of the tasks whose ids a list of a Redis queue holds (v2 layout: `waiting`,
 * `processing:<id>`...), in the list's order; each read from the queue's `tasks` hash.
 */
export async function storedMessages (client: Redis, listKey: string): Promise<string[]> {
  const ids = await client.lrange(listKey, 0, -1)
  if (ids.length === 0) return []
  const tasks = `${listKey.slice(0, listKey.lastIndexOf(':v2:') + 4)}tasks`
  return (await client.hmget(tasks, ...ids)).map((message) => message ?? '')
}

/**
 * Stores a message as the Redis queue stores an added task (v2 layout): the message under its id
 * in `tasks`, the id pushed onto `list` (default `waiting`). For messages a client could not write.
 */
export async function storeRaw (client: Redis, key: (name: string) => string, id: string, message: string | Buffer, list = 'waiting'): Promise<void> {
  await client.multi().hset(key('tasks'), id, message).lpush(key(list), id).exec()
}

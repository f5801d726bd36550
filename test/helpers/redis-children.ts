// Helpers of the Redis queue tests (redis-queue, redis-shared, redis-kill, redis-recovery,
// redis-restart): bounded waits, an app whose log lines can be read back, consumer child
// processes (test/fixtures/redis-consumer.js) and a unix-socket proxy that can cut the path to
// Redis while the server itself stays up.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { createServer, createConnection, type Server, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import type { Redis } from 'ioredis'
import { testRedis, uniquePrefix, type RedisConnection } from './redis'

export const root = resolve(__dirname, '..', '..')
export const fixture = join(root, 'test', 'fixtures', 'redis-consumer.js')

export function sleep (ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** Polls `check` every `every` ms until it holds; rejects after `timeout` ms, naming `what`. */
export async function waitUntil (what: string, check: () => boolean | Promise<boolean>, timeout: number, every = 20): Promise<void> {
  const deadline = Date.now() + timeout
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`)
    await sleep(every)
  }
}

/** Rejects when `promise` has not settled within `ms`: a hang becomes a failure. */
export async function within<T> (what: string, promise: PromiseLike<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms)
  })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}

// The log capture is the one of every test app (harness.ts).
export { loggedApp, type LogLine } from './harness'

/** Builds dist/ (which the fixture requires) when it is missing. */
export function ensureBuilt (): void {
  if (existsSync(join(root, 'dist', 'plugin.js'))) return
  execFileSync('npm', ['run', 'build'], { cwd: root, stdio: 'ignore', timeout: 120_000 })
}

/** Whole contents of a Redis list, as strings. */
export async function list (client: Redis, key: string): Promise<string[]> {
  return await client.lrange(key, 0, -1)
}

/** Keys of the server matching `pattern`, read with SCAN (bounded). */
export async function scanKeys (client: Redis, pattern: string): Promise<string[]> {
  const keys: string[] = []
  let cursor = '0'
  for (let round = 0; round < 10_000; round++) {
    const [next, found] = await client.scan(cursor, 'MATCH', pattern, 'COUNT', 1000)
    keys.push(...found)
    cursor = next
    if (cursor === '0') break
  }
  return keys.sort()
}

/** Names of the connections the server has open (CLIENT LIST). */
export async function connectionNames (client: Redis): Promise<string[]> {
  const listing = await client.client('LIST') as string
  return listing.split('\n').map((line) => /(?:^| )name=(\S*)/.exec(line)?.[1] ?? '').filter((name) => name !== '')
}

export interface ConsumerEnv {
  /** Queue options that reach the server ({ unixSocketPath } or { url }), or { cluster: startup nodes }. */
  connection: object
  prefix: string
  queue: string
  name?: string
  heartbeatInterval?: number
  concurrentLimit?: number
  recoveryMaxCount?: number
  /** The queue's groupConcurrency (left out: none). */
  groupConcurrency?: number
  /** Range of the random time a task takes (ms). */
  minDelay?: number
  maxDelay?: number
  /** Another script of test/fixtures/ to run instead of redis-consumer.js, and more environment for it. */
  script?: string
  env?: Record<string, string>
}

export interface ConsumerChild {
  readonly process: ChildProcess
  readonly pid: number
  /** Resolves once the app is ready and its consumer runs. */
  readonly ready: Promise<void>
  /** Resolves with the exit code and signal once the process is gone. */
  readonly exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  isReady: boolean
  isGone: boolean
  /** What the process wrote to stderr (its log, warn and above). */
  stderr: () => string
  /** Sends `signal` and waits (bounded) for the process to exit; SIGKILL when it does not. */
  stop: (signal?: NodeJS.Signals, timeout?: number) => Promise<void>
}

/** Starts test/fixtures/redis-consumer.js with the given settings. */
export function startConsumer (env: ConsumerEnv): ConsumerChild {
  const child = spawn(process.execPath, [env.script === undefined ? fixture : join(root, 'test', 'fixtures', env.script)], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      TQ_CONNECTION: JSON.stringify(env.connection),
      TQ_PREFIX: env.prefix,
      TQ_QUEUE: env.queue,
      TQ_NAME: env.name ?? '',
      TQ_HEARTBEAT: String(env.heartbeatInterval ?? 200),
      TQ_CONCURRENCY: String(env.concurrentLimit ?? 1),
      TQ_RECOVERY_MAX: String(env.recoveryMaxCount ?? 5),
      TQ_GROUP_CONCURRENCY: env.groupConcurrency === undefined ? '' : String(env.groupConcurrency),
      TQ_MIN_DELAY: String(env.minDelay ?? 5),
      TQ_MAX_DELAY: String(env.maxDelay ?? 30),
      ...env.env
    }
  })
  let errText = ''
  child.stderr?.on('data', (chunk: Buffer) => { errText = (errText + chunk.toString()).slice(-20_000) })
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      handle.isGone = true
      resolve({ code, signal })
    })
  })
  const ready = new Promise<void>((resolve, reject) => {
    let out = ''
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString()
      if (out.includes('ready\n') && !handle.isReady) {
        handle.isReady = true
        resolve()
      }
    })
    exited.then(({ code, signal }) => reject(new Error(`consumer exited before it was ready (${code ?? signal}): ${errText}`)), () => {})
  })
  ready.catch(() => {})
  const handle: ConsumerChild = {
    process: child,
    pid: child.pid as number,
    ready,
    exited,
    isReady: false,
    isGone: false,
    stderr: () => errText,
    async stop (signal = 'SIGTERM', timeout = 10_000) {
      if (handle.isGone) return
      child.kill(signal)
      const timer = setTimeout(() => child.kill('SIGKILL'), timeout)
      await exited
      clearTimeout(timer)
    }
  }
  return handle
}

/**
 * A proxy on a unix socket of its own that forwards every connection to `target` (Redis' socket).
 * `cut()` drops every connection and stops listening, so that clients behind it lose Redis while
 * the server stays up; `restore()` listens again.
 */
export interface CuttableProxy {
  socketPath: string
  cut: () => Promise<void>
  restore: () => Promise<void>
  close: () => Promise<void>
}

export async function cuttableProxy (target: string): Promise<CuttableProxy> {
  const dir = mkdtempSync(join(tmpdir(), 'taskqueue-proxy-'))
  const socketPath = join(dir, 'proxy.sock')
  const sockets = new Set<Socket>()
  let server: Server | undefined
  const listen = async (): Promise<void> => {
    const listening = createServer((client) => {
      const upstream = createConnection(target)
      sockets.add(client)
      sockets.add(upstream)
      const drop = (): void => {
        client.destroy()
        upstream.destroy()
        sockets.delete(client)
        sockets.delete(upstream)
      }
      client.on('error', drop).on('close', drop)
      upstream.on('error', drop).on('close', drop)
      client.pipe(upstream)
      upstream.pipe(client)
    })
    await new Promise<void>((resolve, reject) => {
      listening.once('error', reject)
      listening.listen(socketPath, resolve)
    })
    server = listening
  }
  const cut = async (): Promise<void> => {
    const running = server
    server = undefined
    for (const socket of sockets) socket.destroy()
    sockets.clear()
    if (running !== undefined) await new Promise<void>((resolve) => running.close(() => resolve()))
  }
  await listen()
  return {
    socketPath,
    cut,
    restore: listen,
    close: async () => {
      await cut()
      rmSync(dir, { recursive: true, force: true })
    }
  }
}

/**
 * Deletes every key under `prefix` when the test ends: needed on a server named by REDIS_URL,
 * which outlives the test. Register it after testRedis()'s own teardown, so that it runs first.
 */
export function dropPrefixAtEnd (t: { teardown: (fn: () => unknown) => void }, client: Redis, prefix: string): void {
  t.teardown(async () => {
    const keys = await scanKeys(client, `${prefix}*`)
    if (keys.length > 0) await client.del(...keys)
  })
}

/**
 * The test's Redis, a client of it and a key prefix of the test's own: the server is closed and
 * the prefix's keys are dropped when the test ends (the keys first).
 */
export async function redisForTest (t: { teardown: (fn: () => unknown) => void }): Promise<{ redis: RedisConnection, client: Redis, prefix: string }> {
  const redis = await testRedis()
  t.teardown(() => redis.close())
  const client = redis.client()
  const prefix = uniquePrefix()
  dropPrefixAtEnd(t, client, prefix)
  return { redis, client, prefix }
}

// Helpers for tests that run every rule on both queue types: a local queue, and a Redis queue on
// the real server of test/helpers/redis.ts (one per test file, each test on a prefix of its own).
import tap from 'tap'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import type { Redis } from 'ioredis'
import taskqueue from '../../plugin'
import type { QueueOptions, TaskQueuePluginOptions } from '../../lib/options'
import { testRedis, uniquePrefix, type RedisConnection } from './redis'

export type Test = Parameters<Parameters<typeof tap.test>[0]>[0]

export const queueTypes = ['local', 'redis'] as const
export type QueueType = typeof queueTypes[number]

type Server = RedisConnection & { close: () => Promise<void> }
let server: Promise<Server> | undefined

/** The Redis server of this test file, started on first use and stopped when the file ends. */
export function sharedRedis (): Promise<Server> {
  if (server === undefined) {
    server = testRedis()
    tap.teardown(async () => { await (await (server as Promise<Server>)).close() })
  }
  return server
}

/** One queue type as a test sees it. */
export interface Backend {
  type: QueueType
  /** The Redis key prefix of this test ('' for a local queue). */
  prefix: string
  /** Options of a queue named `queue` of this type, with `extra`. */
  queue: (queue?: string, extra?: QueueOptions) => QueueOptions
  /** A plain client of the test's Redis server (Redis only). */
  redis: () => Redis
  /** A Redis key of the queue: `key('waiting')` is `<prefix>:{default}:waiting`. */
  key: (name: string, queue?: string) => string
}

/** The backend of a test; every call for a Redis queue takes a fresh prefix unless one is given. */
export async function backendFor (type: QueueType, prefix = uniquePrefix()): Promise<Backend> {
  if (type === 'local') {
    return {
      type,
      prefix: '',
      queue: (queue = 'default', extra = {}) => ({ queue, type: 'local', ...extra }),
      redis: () => { throw new Error('a local queue has no Redis') },
      key: () => { throw new Error('a local queue has no Redis keys') }
    }
  }
  const redis = await sharedRedis()
  let client: Redis | undefined
  return {
    type,
    prefix,
    queue: (queue = 'default', extra = {}) => ({ queue, type: 'redis', prefix, ...redis.connection, ...extra }),
    redis: () => (client ??= redis.client()),
    key: (name, queue = 'default') => `${prefix}:{${queue}}:${name}`
  }
}

/** Starts an app with the plugin and the routes `routes` adds; closed when the test ends. */
export async function startApp (t: Test, options: TaskQueuePluginOptions, routes: (app: FastifyInstance) => void = () => {},
  fastifyOptions: FastifyServerOptions = {}): Promise<FastifyInstance> {
  const app = Fastify(fastifyOptions)
  t.teardown(() => app.close())
  await app.register(taskqueue, options)
  routes(app)
  await app.ready()
  return app
}

export function sleep (ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** Polls `check` every 10 ms until it holds; rejects after `timeout` ms, naming `what`. */
export async function waitFor (what: string, check: () => boolean | Promise<boolean>, timeout = 5000): Promise<void> {
  const deadline = Date.now() + timeout
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`)
    await sleep(10)
  }
}

/** The `code` of the error that `action` throws or rejects with, or 'no error'. */
export async function codeOf (action: () => unknown): Promise<string> {
  try {
    await action()
  } catch (error) {
    return String((error as { code?: unknown }).code)
  }
  return 'no error'
}

/** A promise with its resolve function, to hold a task handler until a test lets it go. */
export function gate (): { promise: Promise<void>, open: () => void } {
  let open = (): void => {}
  const promise = new Promise<void>((resolve) => { open = resolve })
  return { promise, open }
}

/** Keys of a test prefix that match `pattern` (SCAN, so that the test sees what is left). */
export async function scanKeys (client: Redis, pattern: string): Promise<string[]> {
  const keys: string[] = []
  let cursor = '0'
  do {
    const [next, batch] = await client.scan(cursor, 'MATCH', pattern, 'COUNT', 1000)
    cursor = next
    keys.push(...batch)
  } while (cursor !== '0')
  return keys
}

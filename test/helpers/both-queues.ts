// Helpers for tests that run every rule on both queue types: a local queue, and a Redis queue on
// the real server of test/helpers/redis.ts (one per test file, each test on a prefix of its own).
import tap from 'tap'
import type { FastifyInstance } from 'fastify'
import type { Redis } from 'ioredis'
import type { QueueOptions, TaskQueuePluginOptions } from '../../lib/options'
import { testRedis, uniquePrefix, type RedisConnection } from './redis'
export { storeRaw } from './redis'
import { recordingApp } from './app'

import type { Test } from './harness'

// Polling and gates are shared with the single-queue tests.
export { gate, sleep, waitFor, type Test } from './harness'

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
    key: (name, queue = 'default') => `${prefix}:{${queue}}:v2:${name}`
  }
}

/**
 * The recording app (./app.ts) without its /tasks/:name route: the tests of both queue types declare
 * their own routes in `routes`. Closed when the test ends.
 */
export async function startApp (t: Test, options: TaskQueuePluginOptions, routes: (app: FastifyInstance) => void = () => {}): Promise<FastifyInstance> {
  const { app } = await recordingApp(t, options, { noTaskRoute: true, routes })
  return app
}

export async function codeOf (action: () => unknown): Promise<string> {
  try {
    await action()
  } catch (error) {
    return String((error as { code?: unknown }).code)
  }
  return 'no error'
}

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

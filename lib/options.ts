// The plugin's options: one TypeBox schema is the source of their TypeScript types, their defaults
// and their validation. `resolveOptions` turns what the user passed into a complete, checked set.
import { Type, type Static, type TSchema } from '@sinclair/typebox'
import { Value, type ValueError } from '@sinclair/typebox/value'
import type { Cluster, Redis } from 'ioredis'
import type { QueueBackend, QueueBackendFactory } from '../types'
import { InvalidOptionError, shown } from './errors'
import { checkSchedules, scheduleLabel } from './schedules/check'

/** Queue names end up in Redis keys, log lines and headers: keep them plain. */
const QueueName = Type.String({
  minLength: 1,
  maxLength: 100,
  pattern: '^[A-Za-z0-9_.:-]+$',
  description: 'letters, digits, and _ . : -'
})

/**
 * Options that set a timer: Node fires a timer of more than 2^31 - 1 ms after 1 ms instead, which
 * turned a huge closeTimeout into no wait at all and a huge heartbeatInterval into a beat a ms.
 */
const longestTimer = 2 ** 31 - 1
const timerLimit = { maximum: longestTimer, description: `ms, at most ${longestTimer} (about 24.8 days, the longest a timer waits)` }

const Milliseconds = Type.Integer({ minimum: 0, ...timerLimit })

const QueueBackendSchema = Type.Unsafe<QueueBackend | QueueBackendFactory>(Type.Union([
  Type.Function([], Type.Any()),
  Type.Object({
    name: Type.String(),
    shared: Type.Boolean(),
    put: Type.Function([], Type.Any()),
    receive: Type.Function([], Type.Any()),
    length: Type.Function([], Type.Any()),
    reset: Type.Function([], Type.Any()),
    close: Type.Function([], Type.Any())
  })
], { description: "'local', 'redis', a queue backend object or a factory returning one" }))

/**
 * The app's own ioredis client or Cluster (ioredis 5 or 6), by the members the plugin relies on: a
 * nominal `Redis | Cluster` of the plugin's ioredis refused the app's copy of another version.
 */
export interface RedisClientLike {
  readonly status: string
  readonly isCluster: boolean
  duplicate (...args: never[]): unknown
  defineCommand (name: string, definition: { lua: string, numberOfKeys?: number }): void
}

// An ioredis client keeps its methods on its prototype, which a schema of own properties cannot
// see: resolveOptions checks for `duplicate` itself.
const RedisClientSchema = Type.Unsafe<RedisClientLike>(Type.Object({}, { description: 'an ioredis client or Cluster' }))

/** Keys that only a Redis queue understands. */
export const redisOnlyKeys = [
  'host', 'port', 'db', 'password', 'username', 'unixSocketPath', 'url', 'tls', 'prefix', 'client',
  'enqueueMode', 'heartbeatInterval', 'recoveryMaxCount', 'commandTimeout', 'connectTimeout'
] as const

/** The names `@fastify/rate-limit` users know; both required, no default that could surprise. */
export const RateLimitSchema = Type.Object({
  /** Tries that may start within any `timeWindow`. */
  max: Type.Integer({ minimum: 1 }),
  /** The window, in ms. */
  timeWindow: Type.Integer({ minimum: 1, ...timerLimit })
}, { additionalProperties: false })

export const QueueOptionsSchema = Type.Object({
  queue: Type.Optional(Type.String({ ...QueueName, default: 'default' })),
  type: Type.Optional(Type.Union([
    Type.Literal('local'),
    Type.Literal('redis'),
    QueueBackendSchema
  ], { default: 'local', description: "'local', 'redis', a queue backend object or a factory returning one" })),
  // Redis connection, as in ioredis; defaults as in the original (localhost:6379, db 0). The
  // defaults of these keys are filled in for every queue but only a Redis queue reads them.
  host: Type.Optional(Type.String({ minLength: 1, default: 'localhost' })),
  port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535, default: 6379 })),
  db: Type.Optional(Type.Integer({ minimum: 0, default: 0 })),
  password: Type.Optional(Type.String()),
  username: Type.Optional(Type.String()),
  unixSocketPath: Type.Optional(Type.String({ minLength: 1 })),
  url: Type.Optional(Type.String({ pattern: '^rediss?://' })),
  tls: Type.Optional(Type.Union([Type.Boolean(), Type.Record(Type.String(), Type.Unknown())])),
  /** Namespace of every Redis key of the queue. */
  prefix: Type.Optional(Type.String({ minLength: 1, pattern: '^[^{}]+$', default: 'taskqueue' })),
  /** An ioredis client (or Cluster) to use instead of opening connections; never closed by the plugin. */
  client: Type.Optional(RedisClientSchema),
  /**
   * `after-response` (default): the tasks of a response are pushed once it was sent, and a failed push
   * is retried while the process lives. `before-response`: they are pushed before the response is
   * sent, and a failed push turns the response into a 503.
   */
  enqueueMode: Type.Optional(Type.Union([Type.Literal('after-response'), Type.Literal('before-response')], { default: 'after-response' })),
  /** How often a consumer renews its heartbeat; it counts as dead after three missed beats. */
  heartbeatInterval: Type.Optional(Type.Integer({ minimum: 100, ...timerLimit, default: 5000 })),
  /**
   * Longest a command on the queue's connections may wait for its reply (ms): a Redis that stopped
   * answering fails the command, rather than holding it (and `close()`) for ever.
   */
  commandTimeout: Type.Optional(Type.Integer({ minimum: 1, ...timerLimit, default: 5000 })),
  /** Longest `ready()` waits for Redis to connect and answer (ms), below Fastify's plugin timeout. */
  connectTimeout: Type.Optional(Type.Integer({ minimum: 1, ...timerLimit, default: 5000 })),
  /** Dead letters kept per queue; past it the oldest are dropped (local) or trimmed (Redis). */
  deadLetterMax: Type.Optional(Type.Integer({ minimum: 0, default: 1000 })),
  /** How often a task may be recovered from an expired consumer before it is buried as a poison pill. */
  recoveryMaxCount: Type.Optional(Type.Integer({ minimum: 0, default: 5 })),
  /**
   * Most tasks of one group (`add(url, { group })`) in flight at once, across every consumer of the
   * queue. Left out: no limit (the groups still take turns). Tasks without a group are not limited.
   */
  groupConcurrency: Type.Optional(Type.Integer({ minimum: 1 })),
  /** At most `max` tries of the queue's tasks start in any `timeWindow` ms, across all its consumers. */
  rateLimit: Type.Optional(RateLimitSchema)
}, { additionalProperties: false })

export const RetryDelaySchema = Type.Object({
  /** Delay before the first retry; each further retry doubles it, with jitter. */
  min: Type.Optional(Type.Integer({ minimum: 0, default: 1000 })),
  /** Upper bound of any retry delay. */
  max: Type.Optional(Type.Integer({ minimum: 0, default: 300_000 }))
}, { additionalProperties: false })

export const ConsumerOptionsSchema = Type.Object({
  queue: Type.Optional(Type.String({ ...QueueName, default: 'default' })),
  /** Consumer name; the default is unique per process. */
  name: Type.Optional(Type.String({ minLength: 1, maxLength: 200, pattern: '^[^{}]+$' })),
  /** Tasks dispatched at once; 0 means no limit. */
  concurrentLimit: Type.Optional(Type.Integer({ minimum: 0, default: 1 })),
  /** Retries of a task after a retryable outcome, before it is given up. */
  retryMaxCount: Type.Optional(Type.Integer({ minimum: 0, default: 10 })),
  retryDelay: Type.Optional(RetryDelaySchema),
  /** Longest a try is waited for (ms): past it the try counts as a timeout; nothing stops it. */
  taskTimeout: Type.Optional(Type.Integer({ minimum: 1, ...timerLimit, default: 60_000 }))
}, { additionalProperties: false })

const HeaderName = Type.String({ minLength: 1, pattern: '^[!#$%&\'*+.^_`|~0-9A-Za-z-]+$', description: 'an HTTP header name' })

export const HeaderPolicySchema = Type.Object({
  /** Only these request headers are copied into tasks. Left out: all but the excluded ones. */
  allow: Type.Optional(Type.Array(HeaderName)),
  /** Request headers never copied into tasks, on top of the connection-level ones. */
  exclude: Type.Optional(Type.Array(HeaderName))
}, { additionalProperties: false })

/**
 * A prom-client Registry (of any copy of prom-client), by the members the metrics use: they are on
 * its prototype, which a schema of own properties cannot see, so resolveOptions checks them.
 */
export interface MetricsRegistryLike {
  registerMetric (metric: never): void
  getSingleMetric (name: string): unknown
  removeSingleMetric (name: string): void
}

const MetricsRegistrySchema = Type.Unsafe<MetricsRegistryLike>(Type.Object({}, { description: 'a prom-client Registry' }))

export const MetricsOptionsSchema = Type.Union([
  Type.Boolean(),
  Type.Object({
    /** The registry to register on; left out, prom-client's default one. */
    registry: Type.Optional(MetricsRegistrySchema)
  }, { additionalProperties: false })
], { description: 'true, false, or { registry }' })

const ParamValue = Type.Union([Type.String(), Type.Number(), Type.Boolean()])

/**
 * A task added at every tick of a cron expression. The task fields are those of `add()` (checked
 * as add() checks them when the plugin starts); the id is made of the name and the tick.
 */
export const ScheduleOptionsSchema = Type.Object({
  /** Part of the task id of every tick (`schedule:<name>:<tick>`), so: the characters of an id. */
  name: Type.String({ minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9_.:-]+$', description: 'letters, digits, and _ . : -' }),
  /** Five fields (minute hour day month weekday), or six with seconds first. */
  cron: Type.String({ minLength: 1 }),
  url: Type.String({ minLength: 1 }),
  method: Type.Optional(Type.Union([Type.Literal('GET'), Type.Literal('POST'), Type.Literal('PUT'), Type.Literal('PATCH'), Type.Literal('DELETE')], { default: 'GET' })),
  params: Type.Optional(Type.Record(Type.String(), Type.Union([ParamValue, Type.Array(ParamValue)]))),
  headers: Type.Optional(Type.Record(Type.String(), Type.String())),
  /** The body of every tick's task: an object or array is sent as JSON, a string as text. Left out: none. */
  payload: Type.Optional(Type.Unsafe<Record<string, unknown> | unknown[] | string | null>(Type.Unknown())),
  /** Default: the alphabetically first registered queue, as for `add()`. */
  queue: Type.Optional(Type.String({ ...QueueName })),
  /** The IANA time zone the fields are read in. */
  timezone: Type.Optional(Type.String({ minLength: 1, default: 'UTC', description: 'an IANA time zone name' }))
}, { additionalProperties: false })

export const TaskQueuePluginOptionsSchema = Type.Object({
  queues: Type.Optional(Type.Array(QueueOptionsSchema, { minItems: 1 })),
  consumers: Type.Optional(Type.Array(ConsumerOptionsSchema)),
  /**
   * Which headers of the request that queues a task are copied into it. Copied cookies and tokens
   * are stored with the task (in Redis, for a Redis queue).
   */
  headerPolicy: Type.Optional(HeaderPolicySchema),
  /** How long `close()` waits for tasks in flight. */
  closeTimeout: Type.Optional(Type.Integer({ ...Milliseconds, default: 10_000 })),
  /**
   * Prometheus metrics through prom-client: `true` registers them on its default registry,
   * `{ registry }` on the one given (the app's own /metrics then shows them). Off by default.
   */
  metrics: Type.Optional(MetricsOptionsSchema),
  /** Tasks added at every tick of a cron expression, once per tick across every instance (lib/schedules/). */
  schedules: Type.Optional(Type.Array(ScheduleOptionsSchema))
}, { additionalProperties: false })

export type ScheduleOptions = Static<typeof ScheduleOptionsSchema>
export type QueueOptions = Static<typeof QueueOptionsSchema>
export type ConsumerOptions = Static<typeof ConsumerOptionsSchema>
export type TaskQueuePluginOptions = Static<typeof TaskQueuePluginOptionsSchema>

type Resolved<T, K extends keyof T> = Omit<T, K> & { [P in K]-?: Exclude<T[P], undefined> }

// Past resolveOptions, a client handed in is taken for the ioredis client or Cluster it looks like.
export type ResolvedQueueOptions = Omit<Resolved<QueueOptions, 'queue' | 'type'>, 'client'> & { client?: Redis | Cluster }
export type HeaderPolicy = Static<typeof HeaderPolicySchema>
export type RateLimit = Static<typeof RateLimitSchema>
export type ResolvedConsumerOptions = Resolved<ConsumerOptions, 'queue' | 'concurrentLimit' | 'retryMaxCount' | 'taskTimeout'> & {
  retryDelay: { min: number, max: number }
}
export interface ResolvedOptions {
  queues: ResolvedQueueOptions[]
  /** Left out when the user gave none: then each queue that is not shared gets a default consumer. */
  consumers: ResolvedConsumerOptions[] | undefined
  closeTimeout: number
  headerPolicy: HeaderPolicy
  /** Set when metrics are on; `registry` undefined means prom-client's default registry. */
  metrics: { registry: MetricsRegistryLike | undefined } | undefined
  /** Every field filled in: `queue` the default queue when left out, `timezone` UTC. */
  schedules: ResolvedSchedule[]
}

export type ResolvedSchedule = Resolved<ScheduleOptions, 'queue' | 'method' | 'timezone'>

/** `/queues/1/concurrentLimit` becomes `queues[1].concurrentLimit`, as a user wrote it. */
function optionPath (pointer: string): string {
  return pointer.split('/').slice(1).reduce((path, part) =>
    /^\d+$/.test(part) ? `${path}[${part}]` : path === '' ? part : `${path}.${part}`, '')
}

function describeError (error: ValueError, input: unknown): string {
  const path = scheduleLabel(optionPath(error.path), input) || 'options'
  const allowed = (error.schema as TSchema).description
  const got = typeof error.value === 'function' ? 'a function' : shown(error.value)
  return `${path}: ${error.message}${allowed === undefined ? '' : ` (${allowed})`}, got ${got}`
}

function firstError (schema: TSchema, value: unknown): string | undefined {
  const error = Value.Errors(schema, value).First()
  return error === undefined ? undefined : describeError(error, value)
}

/** A consumer's options with every default filled in. */
export function resolveConsumer (consumer: ConsumerOptions): ResolvedConsumerOptions {
  return Value.Default(ConsumerOptionsSchema, { ...consumer, retryDelay: { ...consumer.retryDelay } }) as ResolvedConsumerOptions
}

/**
 * Validates the options and fills in their defaults. Throws FST_TASKQUEUE_INVALID_OPTION naming
 * the option path of the first problem.
 */
export function resolveOptions (input: unknown): ResolvedOptions {
  const rawProblem = firstError(TaskQueuePluginOptionsSchema, input ?? {})
  if (rawProblem !== undefined) throw new InvalidOptionError(rawProblem)
  const given = input as TaskQueuePluginOptions ?? {}

  const queues = (given.queues ?? [{}]).map((queue, index) => {
    // Value.Default clones a union's value while it looks for the matching member: a custom backend
    // (a factory, or an object with functions of its own) made it throw, and a class instance was
    // at risk of being swapped for a copy. Defaults are filled in without `type`, then the caller's
    // own backend is put back as it was given.
    const { type, ...plain } = queue
    const resolved = Value.Default(QueueOptionsSchema, plain) as ResolvedQueueOptions
    if (type !== undefined) resolved.type = type
    if (queue.client !== undefined && typeof (queue.client as { duplicate?: unknown }).duplicate !== 'function') {
      throw new InvalidOptionError(`queues[${index}].client: expected an ioredis client or Cluster`)
    }
    if (queue.rateLimit !== undefined && resolved.type !== 'local' && resolved.type !== 'redis') {
      throw new InvalidOptionError(`queues[${index}].rateLimit: only a queue of type 'local' or 'redis' takes it (a custom backend limits itself)`)
    }
    if (resolved.type !== 'redis') {
      const misplaced = redisOnlyKeys.find((key) => (queue as Record<string, unknown>)[key] !== undefined)
      if (misplaced !== undefined) {
        throw new InvalidOptionError(`queues[${index}].${misplaced}: only a queue of type 'redis' takes it`)
      }
    }
    return resolved
  })

  const names = new Set<string>()
  queues.forEach(({ queue }, index) => {
    if (names.has(queue)) throw new InvalidOptionError(`queues[${index}].queue: "${queue}" is registered twice`)
    names.add(queue)
  })

  const consumers = given.consumers?.map((consumer, index) => {
    const resolved = resolveConsumer(consumer)
    if (!names.has(resolved.queue)) {
      throw new InvalidOptionError(`consumers[${index}].queue: no queue "${resolved.queue}" is registered; registered queues: ${[...names].join(', ')}`)
    }
    if (resolved.retryDelay.min > resolved.retryDelay.max) {
      throw new InvalidOptionError(`consumers[${index}].retryDelay: min (${resolved.retryDelay.min}) is above max (${resolved.retryDelay.max})`)
    }
    return resolved
  })

  // allow copies only what it lists, exclude all but what it lists: both at once is a mistake
  // (exclude can only take back what allow just listed), refused rather than guessed at.
  if (given.headerPolicy?.allow !== undefined && given.headerPolicy.exclude !== undefined) {
    throw new InvalidOptionError('headerPolicy: give allow (copy only these headers) or exclude (copy all but these), not both')
  }

  // As add() does, a schedule without a queue goes to the alphabetically first one. The payload is
  // put back as given: filling in defaults may clone it.
  const firstQueue = [...names].sort()[0]
  const schedules = (given.schedules ?? []).map((schedule) => ({
    ...Value.Default(ScheduleOptionsSchema, { ...schedule, queue: schedule.queue ?? firstQueue }) as ResolvedSchedule,
    payload: schedule.payload
  }))
  checkSchedules(schedules, names)

  const { closeTimeout } = Value.Default(TaskQueuePluginOptionsSchema, { closeTimeout: given.closeTimeout }) as { closeTimeout: number }
  return { queues, consumers, closeTimeout, headerPolicy: given.headerPolicy ?? {}, metrics: resolveMetrics(given.metrics), schedules }
}

function resolveMetrics (metrics: TaskQueuePluginOptions['metrics']): ResolvedOptions['metrics'] {
  if (metrics === undefined || metrics === false) return undefined
  if (metrics === true || metrics.registry === undefined) return { registry: undefined }
  const { registry } = metrics
  const missing = (['registerMetric', 'getSingleMetric', 'removeSingleMetric'] as const).find((method) => typeof registry[method] !== 'function')
  if (missing !== undefined) throw new InvalidOptionError(`metrics.registry: expected a prom-client Registry, got an object without ${missing}()`)
  return { registry }
}

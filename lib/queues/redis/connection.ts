// Connection handling of a Redis queue: the client (made from the options, or handed in), its
// timeouts and reconnection, the check at start, the blocking connections of the consumers, and
// closing what the queue opened, and only that. Errors name the server by `addressOf`, never with
// a password.
import { Redis, type Cluster, type RedisOptions } from 'ioredis'
import type { FastifyBaseLogger } from 'fastify'
import type { ResolvedQueueOptions } from '../../options'
import { RedisUnavailableError } from '../../errors'
import { byDeadline, OutOfTimeError } from '../../deadline'
import { defineScripts, type ScriptCommands } from './scripts'
import type { QueueKeys } from './keys'
import type { TaskEvents } from '../../instrumentation/channels'

export type RedisClient = Redis | Cluster
export type ScriptedClient = RedisClient & ScriptCommands

/** What the queue side and the consumer side of one queue share. */
export interface QueueContext {
  readonly name: string
  readonly keys: QueueKeys
  readonly connection: RedisConnection
  readonly options: ResolvedQueueOptions
  readonly log: FastifyBaseLogger
  /** Where the queue publishes what only it sees: recoveries, and the tasks it buries itself. */
  readonly events: TaskEvents
}

/** How long past its own timeout a blocking read may stay unanswered before it counts as stuck (ms). */
export const blockingGrace = 5_000
/** Producers and idle connections ping this often, so a dead link is noticed and a firewall sees traffic. */
const pingInterval = 30_000

function connectionOptions (options: ResolvedQueueOptions): RedisOptions {
  const { host, port, db, username, password, tls, unixSocketPath, queue, commandTimeout, connectTimeout } = options
  return {
    ...(unixSocketPath === undefined ? { host, port } : { path: unixSocketPath }),
    db,
    username,
    password,
    ...(tls === undefined || tls === false ? {} : { tls: tls === true ? {} : tls }),
    lazyConnect: true,
    // TCP keepalive notices a dead peer even on a connection that has nothing to say.
    keepAlive: 10_000,
    connectionName: `fastify-taskqueue:${queue}`,
    // Fail a command after a few reconnection attempts: each caller has its own way to try again
    // (consumers loop, pushes after a response are retried, pushes before one answer 503).
    maxRetriesPerRequest: 3,
    // A server that stopped answering (frozen, paused, a black-holed link) keeps the connection
    // open: without a timeout a command, and close() behind it, would wait for ever.
    commandTimeout,
    connectTimeout,
    // A connection dropped while the server does not answer is destroyed after this, rather than
    // ioredis' 2 s, so that nothing keeps the process alive for long after close().
    disconnectTimeout: 500
  }
}

/**
 * By the client's own flag, not `instanceof`: a Cluster of the app's own ioredis (another version,
 * or another copy) is no instance of the plugin's Cluster class.
 */
function isCluster (client: RedisClient): client is Cluster {
  return client.isCluster
}

/** Where a queue's Redis is, for messages: never with a password. */
export function addressOf (options: ResolvedQueueOptions): string {
  const { client, url, unixSocketPath, host, port, db } = options
  if (client !== undefined) {
    if (isCluster(client)) return 'a Redis Cluster client handed in'
    const { path, host: clientHost, port: clientPort, db: clientDb } = client.options
    return `${path !== undefined && path !== null && path !== '' ? path : `${clientHost}:${clientPort}`} db ${clientDb ?? 0} (a client handed in)`
  }
  if (url !== undefined) {
    try {
      const parsed = new URL(url)
      if (parsed.password !== '') parsed.password = '***'
      return parsed.toString()
    } catch {
      return 'an unreadable url'
    }
  }
  return `${unixSocketPath ?? `${host}:${port}`} db ${db ?? 0}`
}

/**
 * Connects within `timeout` ms, rejecting with the connection's own error rather than ioredis'
 * "Connection is closed", and checks that the database asked for exists (ioredis only emits an
 * error when its SELECT fails, and carries on in db 0). A connection of the plugin's own that
 * failed is disconnected; a client handed in is left as it is, to its owner's reconnection policy.
 */
export async function connect (client: RedisClient, owned: boolean, timeout: number): Promise<void> {
  let firstError: Error | undefined
  const onError = (error: Error): void => { firstError ??= error }
  let onReady: (() => void) | undefined
  let onEnd: (() => void) | undefined
  let timer: NodeJS.Timeout | undefined
  client.on('error', onError)
  try {
    const connected = client.status === 'ready'
      ? Promise.resolve()
      : client.status === 'wait'
        ? client.connect()
        : new Promise<void>((resolve, reject) => {
          onReady = resolve
          onEnd = () => reject(new Error('connection ended'))
          client.once('ready', onReady)
          client.once('end', onEnd)
        })
    const outOfTime = new Promise<never>((resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within connectTimeout (${timeout} ms)`)), timeout)
    })
    await Promise.race([connected, outOfTime])
    const db = isCluster(client) ? 0 : client.options.db ?? 0
    if (db !== 0) await Promise.race([(client as Redis).select(db), outOfTime])
  } catch (error) {
    if (owned) client.disconnect()
    throw firstError ?? error
  } finally {
    clearTimeout(timer)
    client.off('error', onError)
    if (onReady !== undefined) client.off('ready', onReady)
    if (onEnd !== undefined) client.off('end', onEnd)
  }
}

/** The connection of one queue: its client, with the scripts defined on it. */
export class RedisConnection {
  readonly client: ScriptedClient
  /** Where the server is, for messages (without a password). */
  readonly address: string
  private readonly options: ResolvedQueueOptions
  private readonly log: FastifyBaseLogger
  /** False for a client handed in: the queue neither connects it again nor closes it. */
  private readonly owned: boolean
  private readonly pingTimer: NodeJS.Timeout
  private lastErrorMessage = ''
  /** Told whenever the connection (or a node of a Cluster client) was lost. */
  private readonly lostListeners = new Set<() => void>()
  private readonly connectionLost = (): void => {
    for (const listener of this.lostListeners) listener()
  }

  /** Logs connection errors once per distinct error, not once per reconnection attempt. */
  private readonly connectionError = (error: Error): void => {
    if (error.message === this.lastErrorMessage) return
    this.lastErrorMessage = error.message
    this.log.warn({ err: error, queue: this.options.queue }, 'taskqueue: Redis connection error')
  }

  private readonly connectionReady = (): void => { this.lastErrorMessage = '' }

  constructor (options: ResolvedQueueOptions, log: FastifyBaseLogger) {
    this.options = options
    this.log = log
    this.owned = options.client === undefined
    const client = options.client ?? (options.url === undefined
      ? new Redis(connectionOptions(options))
      : new Redis(options.url, { ...connectionOptions(options), host: undefined, port: undefined }))
    this.address = addressOf(options)
    this.watchErrors(client)
    this.client = defineScripts(client)
    // 'close' for a connection of the queue's own, 'node error' for one of a Cluster client's nodes.
    client.on('close', this.connectionLost)
    client.on('node error', this.connectionLost)
    this.pingTimer = setInterval(() => { this.client.ping().catch(() => {}) }, pingInterval).unref()
  }

  /** Calls `listener` whenever the connection is lost, until `offLost`. */
  onLost (listener: () => void): void {
    this.lostListeners.add(listener)
  }

  offLost (listener: () => void): void {
    this.lostListeners.delete(listener)
  }

  /** Connects within `connectTimeout`; fails with FST_TASKQUEUE_REDIS_UNAVAILABLE, naming the queue and the server. */
  async ready (): Promise<void> {
    try {
      await connect(this.client, this.owned, this.options.connectTimeout as number)
    } catch (error) {
      throw new RedisUnavailableError(this.options.queue, this.address, (error as Error).message, { cause: error })
    }
  }

  /** A connection of the queue's own for blocking reads, closed by whoever asked for it. */
  blockingConnection (): RedisClient {
    const blockingOptions: RedisOptions = {
      // A blocking read that outlives its own timeout by this much is taken for a stuck
      // connection: it is failed, and the consumer reconnects.
      blockingTimeout: 1,
      blockingTimeoutGrace: blockingGrace,
      connectionName: `fastify-taskqueue:${this.options.queue}:consumer`,
      maxRetriesPerRequest: null,
      // Blocking reads have their own bound (blockingTimeout above).
      commandTimeout: undefined,
      // A blocking read is not queued while disconnected, nor sent again after a reconnection:
      // ioredis settles such a read with null once its blocking timeout passes (1 ms in the offline
      // queue), and yet sends it when the connection is back. Such a read moves no task (see
      // the receiver's waitForWork), but it would hold the connection up to its timeout for nothing.
      enableOfflineQueue: false,
      autoResendUnfulfilledCommands: false
    }
    const client = this.client
    const connection: RedisClient = isCluster(client)
      ? client.duplicate(undefined, { redisOptions: { ...client.options.redisOptions, ...blockingOptions } })
      : client.duplicate(blockingOptions)
    this.watchErrors(connection)
    return connection
  }

  private watchErrors (client: RedisClient): void {
    client.on('error', this.connectionError)
    client.on('ready', this.connectionReady)
  }

  /**
   * Closes the connection once `pending` settled, by `deadline` (ms since the epoch): past it, a
   * connection of the queue's own is dropped, which fails what is pending on it. A client handed
   * in stays open, without any listener of the queue's.
   */
  async close (deadline: number, pending: Promise<void>): Promise<void> {
    clearInterval(this.pingTimer)
    const client = this.client
    client.off('close', this.connectionLost)
    client.off('node error', this.connectionLost)
    client.off('ready', this.connectionReady)
    // A connection of the queue's own keeps its error listener: ioredis prints an error that no
    // listener takes, and a reply lost to the drop below may still come as one.
    if (!this.owned) client.off('error', this.connectionError)
    try {
      await byDeadline(pending, deadline, 'pushes on their way')
      if (this.owned) {
        if (client.status === 'wait' || client.status === 'end') client.disconnect()
        else await byDeadline(client.quit(), deadline, 'closing the connection')
      }
    } catch (error) {
      if (this.owned) client.disconnect()
      if (error instanceof OutOfTimeError) {
        this.log.error({ err: error, queue: this.options.queue }, 'taskqueue: Redis did not answer in time at close, connection dropped')
      }
    }
  }
}

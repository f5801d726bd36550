// The Redis queue: shared by every instance that registers it, durable across process deaths.
//
// Protocol (the README documents it key by key): producers LPUSH messages onto `waiting`; a
// consumer reserves them with a script that LMOVEs as many as it has free slots into its own
// `processing:<consumer id>` list (and acknowledges, in the same call, the tasks that finished, by
// removing their exact strings); on an empty queue it waits with a blocking read that moves
// nothing. Each consumer renews `heartbeat:<consumer id>`; the lists of consumers whose heartbeat
// expired go back to `waiting`, recovered by any live consumer under a lease, and a task
// recovered too often is set aside in `dead`. A consumer gives back what its own list holds
// unknown to it (a reservation whose reply was lost, or that ran twice).
import { randomBytes } from 'node:crypto'
import { isUtf8 } from 'node:buffer'
import { Cluster, Redis, type RedisOptions } from 'ioredis'
import type { FastifyBaseLogger } from 'fastify'
import type {
  DeadLetter, DeadLetterCause, DeadLetterPage, QueueBackend, ReservedTask, TaskMessage, TaskReceiver
} from '../../types'
import type { ResolvedQueueOptions } from '../options'
import { RedisUnavailableError } from '../errors'
import { byDeadline, OutOfTimeError } from '../deadline'
import { decodeDeadLetter, decodeMessage, encodeMessage, idAtHead } from './codec'
import { BatchSender } from './batch'
import {
  ackAndTakeScript, buryScript, enqueueScript, heartbeatScript, promoteScript, recoverScript, releaseScript,
  requeueDeadScript, resetScript, retryScript, returnUnknownScript
} from './redis-scripts'

type RedisClient = Redis | Cluster

interface ScriptCommands {
  taskqueueEnqueue (waiting: string, delayed: string, names: string, ...triples: Array<string | number>): Promise<number>
  taskqueueAckAndTakeBuffer (processing: string, waiting: string, recoveries: string, names: string, consumers: string, heartbeat: string,
    recovered: string, take: number, id: string, lifetimeMs: number, ...acks: string[]): Promise<Buffer[]>
  taskqueueBury (processing: string, dead: string, names: string, recoveries: string, raw: string | Buffer, entry: string, id: string, deadMax: number): Promise<number>
  taskqueueRequeueDead (dead: string, waiting: string, names: string, entry: string, raw: string, name: string): Promise<number>
  taskqueueRelease (processing: string, waiting: string, raw: string): Promise<number>
  taskqueueReset (waiting: string, recovered: string, delayed: string, names: string, recoveries: string, limit: number): Promise<number>
  taskqueueRetry (processing: string, delayed: string, raw: string, next: string, delayMs: number): Promise<number>
  taskqueuePromote (delayed: string, waiting: string, limit: number): Promise<number>
  taskqueueHeartbeat (consumers: string, heartbeat: string, recovered: string, id: string, lifetimeMs: number): Promise<number>
  taskqueueReturnUnknown (processing: string, waiting: string, recoveries: string, recovered: string, ...known: string[]): Promise<number>
  taskqueueRecover (consumers: string, recovered: string, dead: string, recoveries: string, lease: string, names: string,
    base: string, holder: string, leaseMs: number, maxRecoveries: number, self: string, deadMax: number): Promise<[number, number]>
}

type ScriptedClient = RedisClient & ScriptCommands

const scripts: Record<Exclude<keyof ScriptCommands, `${string}Buffer`> | 'taskqueueAckAndTake', { lua: string, numberOfKeys: number }> = {
  taskqueueEnqueue: { lua: enqueueScript, numberOfKeys: 3 },
  taskqueueAckAndTake: { lua: ackAndTakeScript, numberOfKeys: 7 },
  taskqueueBury: { lua: buryScript, numberOfKeys: 4 },
  taskqueueRequeueDead: { lua: requeueDeadScript, numberOfKeys: 3 },
  taskqueueRelease: { lua: releaseScript, numberOfKeys: 2 },
  taskqueueReset: { lua: resetScript, numberOfKeys: 5 },
  taskqueueRetry: { lua: retryScript, numberOfKeys: 2 },
  taskqueuePromote: { lua: promoteScript, numberOfKeys: 2 },
  taskqueueHeartbeat: { lua: heartbeatScript, numberOfKeys: 3 },
  taskqueueReturnUnknown: { lua: returnUnknownScript, numberOfKeys: 4 },
  taskqueueRecover: { lua: recoverScript, numberOfKeys: 6 }
}

/** The keys of one queue; they share the hash tag `{queue}`. */
export function keysOf (prefix: string, queue: string) {
  const base = `${prefix}:{${queue}}:`
  return {
    base,
    waiting: `${base}waiting`,
    /** Tasks of dead consumers, each to be reserved alone (see ackAndTakeScript). */
    recovered: `${base}recovered`,
    delayed: `${base}delayed`,
    dead: `${base}dead`,
    consumers: `${base}consumers`,
    recoveries: `${base}recoveries`,
    names: `${base}names`,
    lease: `${base}lease`,
    processing: (consumerId: string) => `${base}processing:${consumerId}`,
    heartbeat: (consumerId: string) => `${base}heartbeat:${consumerId}`
  }
}

type QueueKeys = ReturnType<typeof keysOf>

/**
 * How long a consumer blocks on an empty queue before it looks again (s): the bound on how late a
 * delayed task, or one pushed while the consumer was disconnected, is picked up.
 */
const blockSeconds = 1
/** How long past its own timeout a blocking read may stay unanswered before it counts as stuck (ms). */
const blockingGrace = 5_000
/** Retried tasks moved from the delayed set into the queue per round trip. */
const promoteBatch = 100
/** Most responses whose tasks go in one LPUSH. */
const pushBatch = 500
/** Most tasks reset() drops per script call. */
const resetBatch = 500
/** Most tasks a consumer reserves, or acknowledges, in one round trip. */
const takeBatch = 100
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
 * By the client's own flag, not `instanceof`: a Cluster of the app's own ioredis (another version,
 * or another copy) is no instance of the plugin's Cluster class.
 */
function isCluster (client: RedisClient): client is Cluster {
  return client.isCluster
}

/**
 * Connects within `timeout` ms, rejecting with the connection's own error rather than ioredis'
 * "Connection is closed", and checks that the database asked for exists (ioredis only emits an
 * error when its SELECT fails, and carries on in db 0). A connection of the plugin's own that
 * failed is disconnected; a client handed in is left as it is, to its owner's reconnection policy.
 */
async function connect (client: RedisClient, owned: boolean, timeout: number): Promise<void> {
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

export class RedisQueue implements QueueBackend {
  readonly shared = true
  readonly keys: QueueKeys
  readonly client: ScriptedClient
  private readonly ownsClient: boolean
  private readonly pingTimer: NodeJS.Timeout
  private lastErrorMessage = ''

  constructor (readonly options: ResolvedQueueOptions, readonly log: FastifyBaseLogger) {
    this.name = options.queue
    this.keys = keysOf(options.prefix as string, options.queue)
    this.ownsClient = options.client === undefined
    const client = options.client ?? (options.url === undefined
      ? new Redis(connectionOptions(options))
      : new Redis(options.url, { ...connectionOptions(options), host: undefined, port: undefined }))
    this.address = addressOf(options)
    this.watchErrors(client)
    for (const [name, { lua, numberOfKeys }] of Object.entries(scripts)) {
      client.defineCommand(name, { lua, numberOfKeys })
    }
    this.client = client as ScriptedClient
    // A lost connection may leave tasks in a consumer's own list that it does not know of: 'close'
    // for a connection of its own, 'node error' for one of a Cluster client's nodes.
    client.on('close', this.connectionLost)
    client.on('node error', this.connectionLost)
    this.pingTimer = setInterval(() => { this.client.ping().catch(() => {}) }, pingInterval).unref()
  }

  readonly name: string
  /** Where the server is, for messages (without a password). */
  readonly address: string
  /** The consumers of this queue in this process. */
  readonly receivers = new Set<RedisReceiver>()
  private readonly connectionLost = (): void => {
    for (const receiver of this.receivers) receiver.connectionLost()
  }

  /** Logs connection errors once per distinct error, not once per reconnection attempt. */
  watchErrors (client: RedisClient): void {
    client.on('error', this.connectionError)
    client.on('ready', this.connectionReady)
  }

  private readonly connectionError = (error: Error): void => {
    if (error.message === this.lastErrorMessage) return
    this.lastErrorMessage = error.message
    this.log.warn({ err: error, queue: this.name }, 'taskqueue: Redis connection error')
  }

  private readonly connectionReady = (): void => { this.lastErrorMessage = '' }

  /** Connects within `connectTimeout`; fails with FST_TASKQUEUE_REDIS_UNAVAILABLE, naming the queue and the server. */
  async ready (): Promise<void> {
    try {
      await connect(this.client, this.ownsClient, this.options.connectTimeout as number)
    } catch (error) {
      throw new RedisUnavailableError(this.name, this.address, (error as Error).message, { cause: error })
    }
  }

  /** Consumers of this queue that are alive anywhere, as the consumer set holds them. */
  async consumerCount (): Promise<number> {
    return await this.client.scard(this.keys.consumers)
  }

  /** A connection of this queue's own for blocking reads, closed by whoever asked for it. */
  blockingConnection (): RedisClient {
    const blockingOptions: RedisOptions = {
      // A blocking read that outlives its own timeout by this much is taken for a stuck
      // connection: it is failed, and the consumer reconnects.
      blockingTimeout: 1,
      blockingTimeoutGrace: blockingGrace,
      connectionName: `fastify-taskqueue:${this.name}:consumer`,
      maxRetriesPerRequest: null,
      // Blocking reads have their own bound (blockingTimeout above).
      commandTimeout: undefined,
      // A blocking read is not queued while disconnected, nor sent again after a reconnection:
      // ioredis settles such a read with null once its blocking timeout passes (1 ms in the offline
      // queue), and yet sends it when the connection is back. Such a read moves no task (see
      // waitForWork), but it would hold the connection up to its timeout for nothing.
      enableOfflineQueue: false,
      autoResendUnfulfilledCommands: false
    }
    const connection: RedisClient = isCluster(this.client)
      ? this.client.duplicate(undefined, { redisOptions: { ...this.client.options.redisOptions, ...blockingOptions } })
      : this.client.duplicate(blockingOptions)
    this.watchErrors(connection)
    return connection
  }

  /**
   * Pushes of tasks that are due and unnamed (the common case), gathered: the responses of many
   * requests go out in one LPUSH while the previous one is on its way.
   */
  private readonly pusher = new BatchSender<string[], void>(async (batches) => {
    await this.client.lpush(this.keys.waiting, ...batches.flat())
    return []
  }, pushBatch)

  async put (tasks: readonly TaskMessage[]): Promise<void> {
    // The tasks of one response go in one command, in order: a plain LPUSH of several values
    // when every task is due and unnamed, else a script that sorts them out.
    const now = Date.now()
    if (tasks.every((task) => task.eta <= now && task.named !== true)) {
      await this.pusher.send(tasks.map(encodeMessage))
      return
    }
    const triples = tasks.flatMap((task) => [encodeMessage(task), Math.max(0, task.eta - now), task.named === true ? task.id : ''])
    await this.client.taskqueueEnqueue(this.keys.waiting, this.keys.delayed, this.keys.names, ...triples)
  }

  receive (consumerName: string): TaskReceiver {
    const receiver = new RedisReceiver(this, consumerName)
    this.receivers.add(receiver)
    return receiver
  }

  async length (): Promise<number> {
    const [waiting, recovered, delayed] = await Promise.all([
      this.client.llen(this.keys.waiting),
      this.client.llen(this.keys.recovered),
      this.client.zcard(this.keys.delayed)
    ])
    return waiting + recovered + delayed
  }

  /** Drops the waiting, recovered and delayed tasks, with only their own names and recovery counts. */
  async reset (): Promise<void> {
    const { waiting, recovered, delayed, names, recoveries } = this.keys
    // Until a call comes back short: the queue was empty at that moment.
    let dropped: number
    do {
      dropped = await this.client.taskqueueReset(waiting, recovered, delayed, names, recoveries, resetBatch)
    } while (dropped === resetBatch)
  }

  /** Moves a message from a processing list to the dead letters; `raw` as reserved, bytes or text. */
  async bury (processing: string, raw: string | Buffer, id: string, cause: DeadLetterCause): Promise<void> {
    const entry = JSON.stringify({ ...cause, at: Date.now(), task: raw.toString() })
    await this.client.taskqueueBury(processing, this.keys.dead, this.keys.names, this.keys.recoveries, raw, entry, id,
      this.options.deadLetterMax as number)
  }

  /** Reads a stored message, which must be a task of this queue. */
  decode (raw: string): ReturnType<typeof decodeMessage> {
    const decoded = decodeMessage(raw)
    if (decoded.message !== undefined && decoded.message.queue !== this.name) {
      return { problem: `a task of queue "${decoded.message.queue}", not of "${this.name}"`, id: decoded.message.id }
    }
    return decoded
  }

  /** A stored dead letter; a malformed entry is shown whole as unreadable, none of its fields trusted. */
  private readDeadLetter (entry: string): DeadLetter {
    const { letter: stored, problem } = decodeDeadLetter(entry)
    if (stored === undefined) return { id: null, queue: this.name, reason: 'unreadable', detail: problem, at: 0, task: null, raw: entry }
    const raw = stored.task
    const decoded = this.decode(raw)
    const letter: DeadLetter = {
      id: decoded.message?.id ?? null,
      queue: this.name,
      reason: stored.reason,
      at: stored.at,
      task: decoded.message ?? null
    }
    if (stored.detail !== undefined) letter.detail = stored.detail
    if (stored.statusCode !== undefined) letter.statusCode = stored.statusCode
    if (decoded.message === undefined) letter.raw = raw
    return letter
  }

  async dead ({ offset = 0, limit = 100 }: DeadLetterPage = {}): Promise<DeadLetter[]> {
    if (limit <= 0) return []
    const entries = await this.client.lrange(this.keys.dead, offset, offset + limit - 1)
    return entries.map((entry) => this.readDeadLetter(entry))
  }

  async requeue (id?: string): Promise<number> {
    const entries = await this.client.lrange(this.keys.dead, 0, -1)
    const now = Date.now()
    let requeued = 0
    // Oldest first, so that the queue runs them in the order they died.
    for (const entry of entries.reverse()) {
      const { task } = this.readDeadLetter(entry)
      if (task === null || (id !== undefined && task.id !== id)) continue
      const raw = encodeMessage({ ...task, retries: 0, eta: now })
      requeued += await this.client.taskqueueRequeueDead(this.keys.dead, this.keys.waiting, this.keys.names, entry, raw,
        task.named === true ? task.id : '')
    }
    return requeued
  }

  async purge (): Promise<number> {
    const results = await this.client.multi().llen(this.keys.dead).del(this.keys.dead).exec()
    return Number(results?.[0]?.[1] ?? 0)
  }

  /**
   * Waits for the pushes on their way and closes the connection, by `deadline` (ms since the
   * epoch): past it, a connection of the queue's own is dropped, which fails what is pending on
   * it. A client handed in stays open, without any listener of the queue's.
   */
  async close (deadline = Date.now() + (this.options.commandTimeout as number)): Promise<void> {
    clearInterval(this.pingTimer)
    const client = this.client
    client.off('close', this.connectionLost)
    client.off('node error', this.connectionLost)
    client.off('ready', this.connectionReady)
    // A connection of the queue's own keeps its error listener: ioredis prints an error that no
    // listener takes, and a reply lost to the drop below may still come as one.
    if (!this.ownsClient) client.off('error', this.connectionError)
    try {
      await byDeadline(this.pusher.idle(), deadline, 'pushes on their way')
      if (this.ownsClient) {
        if (client.status === 'wait' || client.status === 'end') client.disconnect()
        else await byDeadline(client.quit(), deadline, 'closing the connection')
      }
    } catch (error) {
      if (this.ownsClient) client.disconnect()
      if (error instanceof OutOfTimeError) {
        this.log.error({ err: error, queue: this.name }, 'taskqueue: Redis did not answer in time at close, connection dropped')
      }
    }
  }
}

/** What a consumer's round trip carries: a task to acknowledge, or how many to reserve. */
type Exchange = { raw: string, id: string } | { take: number }

/**
 * What a reservation got: `take`, tasks of the queue; `recovered`, one task of a dead consumer, to
 * run alone; `drain`, nothing, as recovered tasks wait for a consumer that holds none; `held`,
 * nothing asked, as this consumer runs a recovered task.
 */
interface Taken { mode: 'take' | 'recovered' | 'drain' | 'held', tasks: Buffer[] }

interface RedisReservedTask extends ReservedTask {
  /** The exact string that was reserved: settling the task removes it and nothing else. */
  readonly raw: string
}

class RedisReceiver implements TaskReceiver {
  /** Unique to this process even when two processes are given the same consumer name. */
  readonly id: string
  private readonly processing: string
  private readonly heartbeatKey: string
  private blocking: RedisClient
  private readonly heartbeatInterval: number
  private heartbeatTimer: NodeJS.Timeout | undefined
  private started: Promise<void> | undefined
  /** Reserved tasks not yet settled: those the processing list may hold. */
  private readonly reserved = new Set<RedisReservedTask>()
  /** When the delayed set may next hold a due task. */
  private nextPromoteAt = 0
  /**
   * Set when a reservation failed (its reply is lost, its moves may have happened) or the
   * connection was lost (ioredis then sends the commands in flight again, so a reservation may run
   * twice): the processing list may hold tasks this consumer does not know of. They are given back
   * as soon as no reservation is on its way, busy or not (see returnOrphans).
   */
  private ownListSuspect = false
  /** Reserved in a batch, not yet handed to the consumer. */
  private readonly prefetched: RedisReservedTask[] = []
  /** Set when the last batch came back short: the consumer waits for work with a blocking read. */
  private waitingLooksEmpty = false
  /**
   * Reservations on their way, oldest first; each leaves once its tasks are accepted (until then,
   * the tasks it moved into the processing list are unknown to this consumer, yet not orphans).
   */
  private readonly fills: Array<Promise<void>> = []
  /** The signal of the consumer's last reserve(): aborted once it stops. */
  private consumerSignal: AbortSignal | undefined
  /**
   * Acknowledgements and batch reservations, sent together: a busy consumer acknowledges the tasks
   * that finished and reserves the next ones in one round trip.
   */
  private readonly exchange = new BatchSender<Exchange, Taken | undefined>((items) => this.ackAndTake(items), takeBatch)
  /**
   * Set from the reply that gave this consumer a recovered task until that task settles: nothing
   * else is reserved meanwhile, so that if it kills the process it takes no other task with it.
   */
  private soloHeld = false
  /** The recovered task running alone, once accepted. */
  private soloTask: RedisReservedTask | undefined
  /** Set by a `drain` reply: nothing is reserved until the tasks held now have settled. */
  private draining = false
  /** Woken whenever a reserved task settles (see untilSettled). */
  private readonly settleWaiters = new Set<() => void>()

  constructor (private readonly queue: RedisQueue, consumerName: string) {
    this.id = `${consumerName}:${randomBytes(4).toString('hex')}`
    this.processing = queue.keys.processing(this.id)
    this.heartbeatKey = queue.keys.heartbeat(this.id)
    this.blocking = queue.blockingConnection()
    this.heartbeatInterval = queue.options.heartbeatInterval as number
  }

  /** The queue's connection was lost: see ownListSuspect. */
  connectionLost (): void {
    this.ownListSuspect = true
  }

  private start (): Promise<void> {
    this.started ??= (async () => {
      await connect(this.blocking, true, this.queue.options.connectTimeout as number).catch((error: unknown) => {
        // Fix: connect() gives up on a connection that failed (it disconnects it, which leaves
        // ioredis in 'reconnecting' with no reconnection to come), and waiting on that one again
        // hung for ever: the consumer never ran, and app.close() waited on it. Next time, a new one.
        this.blocking = this.queue.blockingConnection()
        throw error
      })
      await this.beat()
      this.heartbeatTimer = setInterval(() => { this.beat().catch(() => {}) }, this.heartbeatInterval).unref()
    })().catch((error: unknown) => {
      // Started again on the next reserve, once Redis can be reached.
      this.started = undefined
      throw error
    })
    return this.started
  }

  /**
   * Renews the heartbeat, gives back what the consumer's own list holds unknown to it (when it
   * holds no task, or may hold unknown ones), and recovers the tasks of dead consumers when this
   * one holds the lease.
   */
  private async beat (): Promise<void> {
    const { keys } = this.queue
    const client = this.queue.client
    const recoveredWaiting = await client.taskqueueHeartbeat(keys.consumers, this.heartbeatKey, keys.recovered, this.id, this.heartbeatInterval * 3)
    // An idle consumer blocks on the waiting list, which no recovery wakes: it looks now instead.
    if (recoveredWaiting > 0) this.waitingLooksEmpty = false
    if (this.ownListSuspect || this.reserved.size === 0) await this.returnOrphans()
    const [recovered, setAside] = await client.taskqueueRecover(keys.consumers, keys.recovered, keys.dead, keys.recoveries,
      keys.lease, keys.names, keys.base, this.id, this.heartbeatInterval, this.queue.options.recoveryMaxCount as number,
      this.id, this.queue.options.deadLetterMax as number)
    if (recovered > 0) {
      this.waitingLooksEmpty = false
      this.queue.log.warn({ queue: this.queue.name, recovered }, 'taskqueue: tasks of a dead consumer returned to the queue')
    }
    if (setAside > 0) this.queue.log.error({ queue: this.queue.name, setAside }, 'taskqueue: tasks recovered too often set aside in the dead list')
  }

  async reserve (signal: AbortSignal, room = 1): Promise<ReservedTask | null> {
    await this.start()
    this.consumerSignal = signal
    const { keys, client } = this.queue
    while (!signal.aborted) {
      // Due retries join the queue even while a backlog keeps the consumer busy: a backlog that
      // never ends must not starve them.
      const now = Date.now()
      if (now >= this.nextPromoteAt) {
        const nextDue = await client.taskqueuePromote(keys.delayed, keys.waiting, promoteBatch)
        this.nextPromoteAt = now + (nextDue < 0 ? blockSeconds * 1000 : Math.min(nextDue, blockSeconds * 1000))
      }
      const ready = this.prefetched.shift()
      if (ready !== undefined) return ready
      if (this.fills.length > 0) {
        await this.fills[0].catch(() => {})
        continue
      }
      if (this.soloHeld || (this.draining && this.reserved.size > 0)) {
        await this.untilSettled(signal)
        continue
      }
      if (this.draining) {
        // Drained, and yet the list was not empty: what it holds is unknown to this consumer.
        this.draining = false
        this.ownListSuspect = true
      }
      if (this.ownListSuspect) {
        await this.returnOrphans()
      }
      if (!this.waitingLooksEmpty) {
        await this.fill(Math.min(takeBatch, room))
        continue
      }
      // Block no longer than until the next delayed task known to be due.
      const waitSeconds = Math.max(0.01, Math.min(blockSeconds, (this.nextPromoteAt - now) / 1000))
      if (await this.waitForWork(waitSeconds, signal)) this.waitingLooksEmpty = false
    }
    return null
  }

  /**
   * Gives back to the queue the tasks of the processing list that this consumer does not know it
   * reserved. A reservation whose reply was lost may still have moved tasks there, ioredis sends
   * the commands in flight again after a reconnection (a reservation that ran before the link
   * broke runs twice, and the reply is that of the second run), and a client library may yet send
   * a command it has given up on (ioredis' Cluster sent blocking reads it had settled once a node
   * came back): such tasks would sit there, not running, until the consumer stopped or died.
   * Skipped while a reservation is on its way, whose tasks are not known yet. The known tasks are
   * read and the script is sent in one go, on the connection that carries the reservations, so a
   * reservation sent after it runs after it. The known tasks travel whole, which is why a busy
   * consumer does this only when its list is suspect.
   */
  private async returnOrphans (): Promise<void> {
    if (this.fills.length > 0) return
    const { keys, client } = this.queue
    const known: string[] = []
    for (const task of this.reserved) known.push(task.raw)
    this.ownListSuspect = false
    let returned: number
    try {
      returned = await client.taskqueueReturnUnknown(this.processing, keys.waiting, keys.recoveries, keys.recovered, ...known)
    } catch (error) {
      this.ownListSuspect = true
      throw error
    }
    if (returned > 0) this.queue.log.warn({ queue: this.queue.name, returned }, 'taskqueue: tasks left in this consumer\'s own list returned to the queue')
  }

  /**
   * Reserves up to `count` tasks into the prefetched ones, with the acknowledgements on their way.
   * A batch that came back short means the queue ran out: the next task is waited for by a
   * blocking read. The tasks asked for, with those prefetched, never outnumber the consumer's
   * free slots (reserve asks for its room, ack for the slot it freed), so each task starts as
   * soon as it arrives: none waits in the processing list, where a crash would count it.
   */
  private fill (count: number): Promise<void> {
    const filled = this.reserveBatch(count)
    this.fills.push(filled)
    // Registered before anyone awaits the batch, so the list is up to date when they resume.
    const forget = (): void => { this.fills.splice(this.fills.indexOf(filled), 1) }
    filled.then(forget, forget)
    return filled
  }

  private async reserveBatch (count: number): Promise<void> {
    let taken: Taken | undefined
    try {
      taken = await this.exchange.send({ take: count }) as Taken
      if (taken.mode === 'held') return
      // After a recovered task, or once drained, the consumer asks again at once.
      this.waitingLooksEmpty = taken.mode === 'take' && taken.tasks.length < count
      if (taken.mode === 'drain') this.draining = true
      for (const bytes of taken.tasks) {
        const task = await this.accept(bytes)
        if (task === undefined) continue
        if (taken.mode === 'recovered') this.soloTask = task
        this.prefetched.push(task)
      }
    } catch (error) {
      // The reply is lost but the moves may have happened, or a task was not accepted.
      this.ownListSuspect = true
      throw error
    } finally {
      // A recovered task that was set aside as unreadable, or not accepted, holds nothing up.
      if (taken?.mode === 'recovered' && taken.tasks.length > 0 && this.soloTask === undefined) this.soloHeld = false
    }
  }

  /** Resolves when a reserved task settles, on abort, or after a second at most. */
  private untilSettled (signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        this.settleWaiters.delete(done)
        signal.removeEventListener('abort', done)
        resolve()
      }
      const timer = setTimeout(done, blockSeconds * 1000)
      this.settleWaiters.add(done)
      signal.addEventListener('abort', done, { once: true })
    })
  }

  /** A reserved message as a task; an unreadable one is set aside in the dead letters instead. */
  private async accept (bytes: Buffer): Promise<RedisReservedTask | undefined> {
    const raw = bytes.toString()
    // Read as bytes: a message that is not valid UTF-8 decodes to a different string, which
    // LREM would never match, so it stayed in the processing list (and came back at close).
    // Such a message is set aside by its exact bytes.
    const decoded = isUtf8(bytes) ? this.queue.decode(raw) : { problem: 'not a task message: not valid UTF-8', id: idAtHead(raw) }
    if (decoded.problem !== undefined) {
      this.queue.log.error({ queue: this.queue.name, problem: decoded.problem, taskId: decoded.id }, 'taskqueue: unreadable message set aside')
      // Whatever id can be read gives up its name and recovery count: else it stayed live for ever.
      await this.queue.bury(this.processing, bytes, decoded.id ?? '', { reason: 'unreadable', detail: decoded.problem })
      return undefined
    }
    const task: RedisReservedTask = { message: decoded.message, raw }
    this.reserved.add(task)
    return task
  }

  /** One round trip: the acknowledgements of a batch, then the reservations it asks for. */
  private async ackAndTake (items: Exchange[]): Promise<Array<Taken | undefined>> {
    const { keys, client } = this.queue
    let take = 0
    const acks: string[] = []
    for (const item of items) {
      if ('take' in item) take += item.take
      else acks.push(item.raw, item.id)
    }
    // Read when the batch leaves: a reservation asked for before a recovered task came takes nothing.
    const held = this.soloHeld
    const reply = await client.taskqueueAckAndTakeBuffer(this.processing, keys.waiting, keys.recoveries, keys.names, keys.consumers,
      this.heartbeatKey, keys.recovered, held ? 0 : take, this.id, this.heartbeatInterval * 3, ...acks)
    const mode: Taken['mode'] = held ? 'held' : reply[0].toString() as Taken['mode']
    // Set before the reply is handed out: the next batch may leave before its callers resume.
    if (mode === 'recovered') this.soloHeld = true
    // Handed out in the order asked.
    let next = 1
    return items.map((item) => {
      if (!('take' in item)) return undefined
      const share = reply.slice(next, next + item.take)
      next += item.take
      return { mode, tasks: share }
    })
  }

  /**
   * Waits until the queue holds a task, or `waitSeconds`, or abort; false only when a blocking
   * read ran out, true when there may be work: a task came, or the read could not be made (the
   * consumer then looks with its script, on the other connection, rather than rely on this one
   * to come back).
   *
   * The read moves nothing: BLMOVE from the consuming end of the queue back onto that same end
   * leaves the list as it was, and the tasks are then reserved by the consumer's own script. So a
   * read whose reply is lost, or one that a client library sends after it gave up on it, can take
   * no task away from the consumers (a read that moved tasks into the processing list did, after
   * a Cluster node came back).
   */
  private async waitForWork (waitSeconds: number, signal: AbortSignal): Promise<boolean> {
    if (this.blocking.status !== 'ready') {
      // Not queued offline (see blockingConnection): wait for the connection, a while at most.
      await this.untilReady(waitSeconds * 1000, signal)
      return true
    }
    const { waiting } = this.queue.keys
    const blocking = this.blocking
    let onAbort: (() => void) | undefined
    const aborted = new Promise<null>((resolve) => {
      onAbort = () => resolve(null)
      signal.addEventListener('abort', onAbort, { once: true })
    })
    // A read in flight when its connection drops is never answered, and ioredis settles it only
    // once its blocking timeout and grace ran out (6 s): the consumer would be deaf that long
    // after Redis came back. It is settled as soon as the connection closes, as "look again".
    let onClose: (() => void) | undefined
    const closed = new Promise<Buffer>((resolve) => {
      onClose = () => resolve(Buffer.alloc(0))
      blocking.once('close', onClose)
      blocking.once('end', onClose)
    })
    const sentAt = Date.now()
    try {
      const seen = await Promise.race([blocking.blmoveBuffer(waiting, waiting, 'RIGHT', 'RIGHT', waitSeconds), aborted, closed])
      if (seen === null && !signal.aborted && Date.now() - sentAt >= waitSeconds * 1000 + blockingGrace) {
        // ioredis gave up waiting (blockingTimeout) and settled the read with null: the server did
        // not answer in time. The connection is taken for stuck and started afresh.
        this.queue.log.warn({ queue: this.queue.name }, 'taskqueue: blocking read unanswered, reconnecting')
        this.blocking.disconnect(true)
        return true
      }
      return seen !== null
    } catch (error) {
      // Start over on a fresh connection in case this one is stuck.
      this.queue.log.warn({ err: error, queue: this.queue.name }, 'taskqueue: blocking read failed, reconnecting')
      this.blocking.disconnect(true)
      await new Promise((resolve) => setTimeout(resolve, 200))
      return true
    } finally {
      signal.removeEventListener('abort', onAbort as () => void)
      blocking.off('close', onClose as () => void)
      blocking.off('end', onClose as () => void)
    }
  }

  /** Resolves once the blocking connection is ready, on abort, or after `ms`. */
  private untilReady (ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        this.blocking.off('ready', done)
        signal.removeEventListener('abort', done)
        resolve()
      }
      const timer = setTimeout(done, ms)
      this.blocking.once('ready', done)
      signal.addEventListener('abort', done, { once: true })
    })
  }

  private settle<T> (task: ReservedTask, work: Promise<T>): Promise<T> {
    return work.finally(() => {
      this.reserved.delete(task as RedisReservedTask)
      if (task === this.soloTask) {
        this.soloTask = undefined
        this.soloHeld = false
      }
      for (const wake of this.settleWaiters) wake()
    })
  }

  async ack (task: ReservedTask): Promise<void> {
    const { raw, message } = task as RedisReservedTask
    // The consumer gave up this task's slot before acknowledging it. While a reservation is on its
    // way, the consumer waits for it and asks for no more: the freed slot's next task is asked for
    // here, in the same round trip as this acknowledgement, rather than a round trip later. Never
    // more than the free slots, so every reserved task starts at once (see fill).
    if (this.fills.length > 0 && !this.waitingLooksEmpty && !this.soloHeld && !this.draining && this.consumerSignal?.aborted === false) {
      this.fill(1).catch(() => {})
    }
    await this.settle(task, this.exchange.send({ raw, id: message.id }))
  }

  async retry (task: ReservedTask, delayMs: number): Promise<void> {
    const { raw, message } = task as RedisReservedTask
    const next = encodeMessage({ ...message, retries: message.retries + 1, eta: Date.now() + delayMs })
    await this.settle(task, this.queue.client.taskqueueRetry(this.processing, this.queue.keys.delayed, raw, next, delayMs))
    this.nextPromoteAt = Math.min(this.nextPromoteAt, Date.now() + delayMs)
  }

  async release (task: ReservedTask): Promise<void> {
    const { raw } = task as RedisReservedTask
    // A recovered task given back still runs alone next time.
    const { waiting, recovered } = this.queue.keys
    await this.settle(task, this.queue.client.taskqueueRelease(this.processing, task === this.soloTask ? recovered : waiting, raw))
  }

  async bury (task: ReservedTask, cause: DeadLetterCause): Promise<void> {
    const { raw, message } = task as RedisReservedTask
    await this.settle(task, this.queue.bury(this.processing, raw, message.id, cause))
  }

  /**
   * Gives back whatever is left in the processing list and leaves the consumer set, by `deadline`
   * (ms since the epoch); what is not done by then is left to the heartbeat.
   */
  async close (deadline = Date.now() + (this.queue.options.commandTimeout as number)): Promise<void> {
    clearInterval(this.heartbeatTimer)
    this.queue.receivers.delete(this)
    // A blocking read still waiting on the server moves nothing (see waitForWork): it is dropped.
    this.blocking.disconnect()
    if (this.started === undefined) return
    const { keys, client } = this.queue
    try {
      // Acknowledgements still on their way go first: the leftovers must not include finished tasks.
      await byDeadline(this.exchange.idle(), deadline, 'acknowledgements on their way')
      // Known to this consumer or not, every task left goes back.
      await byDeadline(client.taskqueueReturnUnknown(this.processing, keys.waiting, keys.recoveries, keys.recovered), deadline, 'returning the tasks left')
      await byDeadline(client.multi().del(keys.heartbeat(this.id)).srem(keys.consumers, this.id).exec(), deadline, 'leaving the consumer set')
    } catch (error) {
      // Left to the heartbeat: another instance recovers the list once it expires.
      this.queue.log.error({ err: error, queue: this.queue.name, consumer: this.id },
        'taskqueue: returning in-flight tasks at close failed; left to recovery by another instance once this consumer\'s heartbeat expires')
    }
  }
}

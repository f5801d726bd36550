// The queue side of a Redis queue: adding tasks (the adds of many responses batched into one
// script call), its length, reset, and the dead letters (list, requeue, purge); the figures, the
// pause and the calls by task id are steering.ts'. The consumer side is the receiver
// (receiver.ts), made by `receive()`; the connection is shared by both.
import type { FastifyBaseLogger } from 'fastify'
import type { DeadLetter, DeadLetterPage, QueueBackend, QueueStats, TaskInfo, TaskMessage, TaskPage, TaskReceiver } from '../../../types'
import type { ResolvedQueueOptions } from '../../options'
import { decodeDeadLetter, decodeTaskOf, encodeMessage } from '../codec'
import { BatchSender } from '../batch'
import { keysOf, type QueueKeys } from './keys'
import { RedisConnection, type ScriptedClient } from './connection'
import { RedisReceiver } from './receiver'
import { RedisSteering } from './steering'
import { TaskEvents } from '../../instrumentation/channels'

/** Most responses whose tasks go in one add. */
const pushBatch = 500
/** Most tasks reset() drops per script call. */
const resetBatch = 500

export class RedisQueue implements QueueBackend {
  readonly shared = true
  readonly name: string
  readonly options: ResolvedQueueOptions
  readonly log: FastifyBaseLogger
  readonly events: TaskEvents
  readonly keys: QueueKeys
  readonly connection: RedisConnection
  readonly client: ScriptedClient
  /** Where the server is, for messages (without a password). */
  readonly address: string
  /**
   * Adds of tasks, gathered: the responses of many requests go out in one call of the add script
   * while the previous one is on its way. Each task is four arguments: id, message, delay in ms,
   * group ('' for none).
   */
  private readonly pusher = new BatchSender<Array<string | number>, void>(async (batches) => {
    await this.client.taskqueueAdd(this.keys.tasks, this.keys.waiting, this.keys.delayed, this.keys.base, ...batches.flat())
    return []
  }, pushBatch)

  private readonly steering: RedisSteering
  /** The receivers of this queue here: told when it is resumed. */
  private readonly receivers = new Set<RedisReceiver>()

  constructor (options: ResolvedQueueOptions, log: FastifyBaseLogger, events = new TaskEvents()) {
    this.options = options
    this.log = log
    this.events = events
    this.name = options.queue
    this.keys = keysOf(options.prefix as string, options.queue)
    this.connection = new RedisConnection(options, log)
    this.client = this.connection.client
    this.address = this.connection.address
    this.steering = new RedisSteering(this.context(), () => { for (const receiver of this.receivers) receiver.resumed() })
  }

  private context () {
    return { name: this.name, keys: this.keys, connection: this.connection, options: this.options, log: this.log, events: this.events }
  }

  /** Connects within `connectTimeout`; fails with FST_TASKQUEUE_REDIS_UNAVAILABLE, naming the queue and the server. */
  async ready (): Promise<void> {
    await this.connection.ready()
  }

  /** Consumers of this queue that are alive anywhere, as the consumer set holds them. */
  async consumerCount (): Promise<number> {
    return await this.client.scard(this.keys.consumers)
  }

  async put (tasks: readonly TaskMessage[]): Promise<void> {
    // The tasks of one response go in one script call, in order, with those of other responses.
    const now = Date.now()
    await this.pusher.send(tasks.flatMap((task) => [task.id, encodeMessage(task), Math.max(0, task.eta - now), task.group ?? '']))
  }

  /**
   * The task of a schedule's tick, added once across every instance: the add script of ticks
   * adds it only when the tick is later than the one the queue recorded for the schedule, and
   * records it in the same step. A tick that any instance added before is never added again,
   * even once its task is done and its id free.
   */
  async putTick (task: TaskMessage): Promise<boolean> {
    const { name, tick } = task.schedule as { name: string, tick: number }
    const { schedules, tasks, waiting, delayed, base } = this.keys
    const delay = Math.max(0, task.eta - Date.now())
    return await this.client.taskqueueAddTick(schedules, tasks, waiting, delayed, name, tick, task.id, encodeMessage(task), delay, base) === 1
  }

  receive (consumerName: string): TaskReceiver {
    const receiver = new RedisReceiver(this.context(), consumerName)
    this.receivers.add(receiver)
    return receiver
  }

  async length (): Promise<number> {
    return await this.steering.length()
  }

  /** Drops the waiting, recovered and delayed tasks, with only their own messages and recovery counts. */
  async reset (): Promise<void> {
    const { waiting, recovered, delayed, tasks, recoveries, cancelled } = this.keys
    // Until a call comes back short: the queue was empty at that moment.
    let dropped: number
    do {
      dropped = await this.client.taskqueueReset(waiting, recovered, delayed, tasks, recoveries, cancelled, resetBatch, this.keys.base)
    } while (dropped === resetBatch)
  }

  stats (): Promise<QueueStats> { return this.steering.stats() }
  pause (): Promise<void> { return this.steering.pause() }
  resume (): Promise<void> { return this.steering.resume() }
  isPaused (): Promise<boolean> { return this.steering.isPaused() }
  get (id: string): Promise<TaskInfo | null> { return this.steering.get(id) }
  cancel (id: string): Promise<boolean> { return this.steering.cancel(id) }
  waiting (page?: TaskPage): Promise<TaskInfo[]> { return this.steering.waiting(page) }

  /** A stored dead letter; a malformed entry is shown whole as unreadable, none of its fields trusted. */
  private readDeadLetter (entry: string): DeadLetter {
    const { letter: stored, problem } = decodeDeadLetter(entry)
    if (stored === undefined) return { id: null, queue: this.name, reason: 'unreadable', detail: problem, at: 0, task: null, raw: entry }
    const raw = stored.task
    const decoded = decodeTaskOf(this.name, raw)
    const letter: DeadLetter = {
      id: decoded.message?.id ?? null,
      queue: this.name,
      reason: stored.reason,
      at: stored.at,
      task: decoded.message ?? null
    }
    if (stored.detail !== undefined) letter.detail = stored.detail
    if (stored.statusCode !== undefined) letter.statusCode = stored.statusCode
    if (stored.body !== undefined) letter.body = stored.body
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
    // Oldest first, so that the queue runs them in the order they were buried.
    for (const entry of entries.reverse()) {
      const { task } = this.readDeadLetter(entry)
      if (task === null || (id !== undefined && task.id !== id)) continue
      const raw = encodeMessage({ ...task, retries: 0, eta: now })
      requeued += await this.client.taskqueueRequeue(this.keys.dead, this.keys.waiting, this.keys.tasks, this.keys.deadIndex, entry, task.id, raw,
        this.keys.base, task.group ?? '')
    }
    return requeued
  }

  async purge (): Promise<number> {
    const results = await this.client.multi().llen(this.keys.dead).del(this.keys.dead, this.keys.deadIndex).exec()
    return Number(results?.[0]?.[1] ?? 0)
  }

  /**
   * Waits for the adds on their way and closes the connection, by `deadline` (ms since the
   * epoch): past it, a connection of the queue's own is dropped, which fails what is pending on
   * it. A client handed in stays open, without any listener of the queue's.
   */
  async close (deadline = Date.now() + (this.options.commandTimeout as number)): Promise<void> {
    await this.connection.close(deadline, this.pusher.idle())
  }
}

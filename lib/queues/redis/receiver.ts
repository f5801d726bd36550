// The consumer side of a Redis queue: reserving tasks into the consumer's own processing list,
// settling them (ack, retry, release, bury), and waiting for work on an empty queue.
//
// A receiver is always in one of four modes:
// - `batch`: the queue has a backlog. Each round trip acknowledges the tasks that finished and
//   reserves as many as the consumer has free slots for (never more: every task in its list is one
//   it started, so a crash counts against those alone).
// - `blocking`: the last batch came back short, so the queue looks empty: the consumer waits for a
//   wake-up token (one per task made reservable, each waking one consumer), then reserves with the
//   script again (back to `batch`).
// - `recovered`: it got a recovered task, which runs alone: nothing else is reserved until it settles.
// - `finishing`: recovered tasks wait, and this consumer still holds tasks: it finishes them, reserving
//   nothing, and then takes a recovered one.
// - `paused`: the queue is paused: the consumer reserves nothing, and asks again after a second, or
//   at once when the queue is resumed in this process.
// - `limited`: the queue's rate limit has no room: the consumer reserves nothing until the time the
//   script said the window has room again, and then asks.
import { randomBytes } from 'node:crypto'
import { isUtf8 } from 'node:buffer'
import type { DeadLetterCause, ReservedTask, TaskReceiver } from '../../../types'
import { decodeTaskOf, encodeDeadLetter, encodeMessage } from '../codec'
import { BatchSender } from '../batch'
import type { QueueContext } from './connection'
import { BlockingRead } from './blocking-read'
import { Liveness } from './liveness'

export type ReceiverMode = 'batch' | 'blocking' | 'recovered' | 'finishing' | 'paused' | 'limited'

/**
 * How long a consumer blocks on an empty queue before it looks again (s): the bound on how late a
 * delayed task, or one added while the consumer was disconnected, is picked up.
 */
const blockSeconds = 1
/** Retried tasks moved from the delayed set into the queue per round trip. */
const promoteBatch = 100
/** Most tasks a consumer reserves, or acknowledges, in one round trip. */
const reserveBatch = 100

/** What a consumer's round trip carries: a task to acknowledge, or how many to reserve. */
type Exchange = { id: string } | { count: number }

/**
 * What a reservation got, as the ack-and-reserve script names it: `batch`, tasks of the queue;
 * `recovered`, one recovered task, to run alone; `finishing`, nothing, as recovered tasks wait for a
 * consumer that holds none; `paused`, nothing, as the queue is paused; `limited`, the tasks that
 * filled the rate limit's window (maybe none); `held` (never sent), nothing asked, as this consumer
 * runs a recovered task. `tasks` holds each task's id, then its message.
 */
interface Reservation { kind: 'batch' | 'recovered' | 'finishing' | 'paused' | 'limited' | 'held', tasks: Buffer[] }

interface RedisReservedTask extends ReservedTask {
  /** The id under which the queue holds the task: what the processing list holds. */
  readonly id: string
  /** The message as it was stored, which a dead letter keeps (not a re-serialised copy). */
  readonly raw: string
}

export class RedisReceiver implements TaskReceiver {
  /** Unique to this process even when two processes are given the same consumer name. */
  readonly id: string
  private mode: ReceiverMode = 'batch'
  private readonly queue: QueueContext
  private readonly processing: string
  private readonly liveness: Liveness
  private readonly blocking: BlockingRead
  private started: Promise<void> | undefined
  /** Reserved tasks not yet settled: those the processing list may hold. */
  private readonly reserved = new Set<RedisReservedTask>()
  /** Reserved in a batch, not yet handed to the consumer. */
  private readonly prefetched: RedisReservedTask[] = []
  /** When the delayed set may next hold a due task. */
  private nextPromoteAt = 0
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
  private readonly exchange = new BatchSender<Exchange, Reservation | undefined>((items) => this.ackAndReserve(items), reserveBatch)
  /** The recovered task running alone (mode `recovered`), once accepted. */
  private soloTask: RedisReservedTask | undefined
  /** Woken whenever a reserved task settles (see untilSettled). */
  private readonly settleWaiters = new Set<() => void>()
  /** The queue's connection was lost: the processing list may hold orphans. */
  private readonly connectionLost = (): void => { this.liveness.ownListSuspect = true }

  /** Resolves the wait of a consumer of a paused queue (see untilResumed). */
  private wakePaused: (() => void) | undefined
  /** When the rate limit's window has room again (mode `limited`), by this process' clock. */
  private windowOpensAt = 0
  /** The rate limit as the script takes it: 0 starts for none. */
  private readonly rateMax: number
  private readonly rateWindowMs: number

  constructor (queue: QueueContext, consumerName: string) {
    this.queue = queue
    this.id = `${consumerName}:${randomBytes(4).toString('hex')}`
    this.processing = queue.keys.processing(this.id)
    this.blocking = new BlockingRead(queue)
    this.liveness = new Liveness(queue, this.id, this.processing, {
      known: () => Array.from(this.reserved, (task) => task.id),
      reserving: () => this.fills.length > 0,
      workMayWait: () => { if (this.mode === 'blocking') this.mode = 'batch' }
    })
    queue.connection.onLost(this.connectionLost)
    this.rateMax = queue.options.rateLimit?.max ?? 0
    this.rateWindowMs = queue.options.rateLimit?.timeWindow ?? 0
  }

  private start (): Promise<void> {
    this.started ??= (async () => {
      await this.blocking.connect()
      await this.liveness.start()
    })().catch((error: unknown) => {
      // Started again on the next reserve, once Redis can be reached.
      this.started = undefined
      throw error
    })
    return this.started
  }

  async reserve (signal: AbortSignal, room = 1): Promise<ReservedTask | null> {
    await this.start()
    this.consumerSignal = signal
    const { keys, connection: { client } } = this.queue
    while (!signal.aborted) {
      // Due retries join the queue even while a backlog keeps the consumer busy: a backlog that
      // never ends must not starve them.
      const now = Date.now()
      if (now >= this.nextPromoteAt) {
        const nextDue = await client.taskqueuePromote(keys.delayed, keys.waiting, promoteBatch, keys.base)
        this.nextPromoteAt = now + (nextDue < 0 ? blockSeconds * 1000 : Math.min(nextDue, blockSeconds * 1000))
      }
      const ready = this.prefetched.shift()
      if (ready !== undefined) return ready
      if (this.fills.length > 0) {
        await this.fills[0].catch(() => {})
        continue
      }
      if (this.mode === 'paused') {
        await this.untilResumed(signal)
        this.mode = 'batch'
        continue
      }
      if (this.mode === 'limited') {
        await this.untilWindowOpens(signal)
        this.mode = 'batch'
        continue
      }
      if (this.mode === 'recovered' || (this.mode === 'finishing' && this.reserved.size > 0)) {
        await this.untilSettled(signal)
        continue
      }
      if (this.mode === 'finishing') {
        // Drained, and yet the list was not empty: what it holds is unknown to this consumer.
        this.mode = 'batch'
        this.liveness.ownListSuspect = true
      }
      if (this.liveness.ownListSuspect) await this.liveness.releaseOrphans()
      if (this.mode === 'batch') {
        await this.fill(Math.min(reserveBatch, room))
        continue
      }
      // Block no longer than until the next delayed task known to be due.
      const waitSeconds = Math.max(0.01, Math.min(blockSeconds, (this.nextPromoteAt - now) / 1000))
      if (await this.blocking.waitForWork(waitSeconds, signal) && this.mode === 'blocking') this.mode = 'batch'
    }
    return null
  }

  /**
   * Reserves up to `count` tasks into the prefetched ones, with the acknowledgements on their way.
   * The tasks asked for, with those prefetched, never outnumber the consumer's free slots (reserve
   * asks for its room, ack for the slot it freed), so each task starts as soon as it arrives: none
   * waits in the processing list, where a crash would count it.
   */
  private fill (count: number): Promise<void> {
    const filled = this.reserveInto(count)
    this.fills.push(filled)
    // Registered before anyone awaits the batch, so the list is up to date when they resume.
    const forget = (): void => { this.fills.splice(this.fills.indexOf(filled), 1) }
    filled.then(forget, forget)
    return filled
  }

  private async reserveInto (count: number): Promise<void> {
    let reservation: Reservation | undefined
    try {
      reservation = await this.exchange.send({ count }) as Reservation
      const { kind, tasks } = reservation
      if (kind === 'held') return
      // A batch that came back short means the queue ran out. After a recovered task, or once
      // finished, the consumer asks again at once.
      if (kind === 'batch' && (this.mode === 'batch' || this.mode === 'blocking')) this.mode = tasks.length < count ? 'blocking' : 'batch'
      if (kind === 'finishing' || kind === 'paused') this.mode = kind
      for (let index = 0; index < tasks.length; index += 2) {
        const task = await this.accept(tasks[index].toString(), tasks[index + 1])
        if (task === undefined) continue
        if (kind === 'recovered') this.soloTask = task
        this.prefetched.push(task)
      }
    } catch (error) {
      // The reply is lost but the moves may have happened, or a task was not accepted.
      this.liveness.ownListSuspect = true
      throw error
    } finally {
      // A recovered task that was buried as unreadable, or not accepted, holds nothing up.
      if (reservation?.kind === 'recovered' && reservation.tasks.length > 0 && this.soloTask === undefined && this.mode === 'recovered') this.mode = 'batch'
    }
  }

  /** The queue was resumed in this process: a consumer waiting on the pause asks again at once. */
  resumed (): void {
    this.wakePaused?.()
  }

  /** Resolves after a second (another instance may resume the queue), on abort, or on resumed(). */
  private untilResumed (signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        this.wakePaused = undefined
        signal.removeEventListener('abort', done)
        resolve()
      }
      const timer = setTimeout(done, blockSeconds * 1000)
      this.wakePaused = done
      signal.addEventListener('abort', done, { once: true })
    })
  }

  /** Resolves once the rate limit's window has room, or on abort: its timer never holds close() up. */
  private untilWindowOpens (signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        signal.removeEventListener('abort', done)
        resolve()
      }
      const timer = setTimeout(done, this.windowOpensAt - Date.now())
      signal.addEventListener('abort', done, { once: true })
    })
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

  /** A reserved message as a task; an unreadable one is buried instead. */
  private async accept (id: string, bytes: Buffer): Promise<RedisReservedTask | undefined> {
    const raw = bytes.toString()
    // A message that is not valid UTF-8 would decode to a different text: it is unreadable.
    const decoded = isUtf8(bytes) ? decodeTaskOf(this.queue.name, raw) : { problem: 'not a task message: not valid UTF-8' }
    if (decoded.problem !== undefined) {
      this.queue.log.error({ queue: this.queue.name, problem: decoded.problem, taskId: id }, 'taskqueue: unreadable message buried')
      // Buried by the id it is stored under, which gives up its message and recovery count; not
      // indexed for get(), which could not read it.
      const cause: DeadLetterCause = { reason: 'unreadable', detail: decoded.problem }
      await this.buryStored(id, raw, '', cause)
      this.queue.events.dead(this.queue.name, id, cause)
      return undefined
    }
    const task: RedisReservedTask = { message: decoded.message, id, raw }
    this.reserved.add(task)
    return task
  }

  /** One round trip: the acknowledgements of a batch, then the reservations it asks for. */
  private async ackAndReserve (items: Exchange[]): Promise<Array<Reservation | undefined>> {
    const { keys, connection: { client } } = this.queue
    let count = 0
    const acks: string[] = []
    for (const item of items) {
      if ('count' in item) count += item.count
      else acks.push(item.id)
    }
    // Read when the batch leaves: a reservation asked for before a recovered task came gets nothing.
    const held = this.mode === 'recovered'
    const reply = await client.taskqueueAckAndReserveBuffer(this.processing, keys.waiting, keys.tasks, keys.inflight, keys.cancelled, keys.recoveries,
      keys.consumers, this.liveness.heartbeatKey, keys.recovered, keys.paused, keys.rateLog, keys.groupOf, held ? 0 : count, this.id,
      this.liveness.lifetime, this.rateMax, this.rateWindowMs, keys.base, this.queue.options.groupConcurrency ?? 0, ...acks)
    const kind: Reservation['kind'] = held ? 'held' : reply[0].toString() as Reservation['kind']
    // Set before the reply is handed out: the next batch may leave before its callers resume.
    if (kind === 'recovered') this.mode = 'recovered'
    // Handed out in the order asked, two entries (id, message) a task, after the wait of `limited`.
    let next = 1
    if (kind === 'limited') {
      this.mode = 'limited'
      this.windowOpensAt = Date.now() + Number(reply[next++].toString())
    }
    return items.map((item) => {
      if (!('count' in item)) return undefined
      const share = reply.slice(next, next + item.count * 2)
      next += item.count * 2
      return { kind, tasks: share }
    })
  }

  /** Runs the settling step of a task; once it is over, the task is no longer held. */
  private settle<T> (task: ReservedTask, work: Promise<T>): Promise<T> {
    return work.finally(() => {
      this.reserved.delete(task as RedisReservedTask)
      if (task === this.soloTask) {
        this.soloTask = undefined
        if (this.mode === 'recovered') this.mode = 'batch'
      }
      for (const wake of this.settleWaiters) wake()
    })
  }

  async ack (task: ReservedTask): Promise<void> {
    const { id } = task as RedisReservedTask
    // The consumer gave up this task's slot before acknowledging it. While a reservation is on its
    // way, the consumer waits for it and asks for no more: the freed slot's next task is asked for
    // here, in the same round trip as this acknowledgement, rather than a round trip later. Never
    // more than the free slots, so every reserved task starts at once (see fill).
    if (this.fills.length > 0 && this.mode === 'batch' && this.consumerSignal?.aborted === false) {
      this.fill(1).catch(() => {})
    }
    await this.settle(task, this.exchange.send({ id }))
  }

  async retry (task: ReservedTask, delayMs: number): Promise<void> {
    const { id, message } = task as RedisReservedTask
    const next = encodeMessage({ ...message, retries: message.retries + 1, eta: Date.now() + delayMs })
    const { delayed, tasks, inflight, base } = this.queue.keys
    await this.settle(task, this.queue.connection.client.taskqueueRetry(this.processing, delayed, tasks, inflight, id, next, delayMs, base))
    this.nextPromoteAt = Math.min(this.nextPromoteAt, Date.now() + delayMs)
  }

  async release (task: ReservedTask): Promise<void> {
    const { id } = task as RedisReservedTask
    // A recovered task released still runs alone next time.
    const { waiting, recovered, inflight, base } = this.queue.keys
    await this.settle(task, this.queue.connection.client.taskqueueRelease(this.processing, task === this.soloTask ? recovered : waiting, inflight, id, base))
  }

  async bury (task: ReservedTask, cause: DeadLetterCause): Promise<void> {
    const { id, raw } = task as RedisReservedTask
    await this.settle(task, this.buryStored(id, raw, id, cause))
  }

  /**
   * Moves a task from the processing list to the dead letters, with `raw` as its message; indexed
   * by `indexId` for get() (or '' for none).
   */
  private async buryStored (id: string, raw: string, indexId: string, cause: DeadLetterCause): Promise<void> {
    const { keys, connection: { client }, options } = this.queue
    const entry = encodeDeadLetter(cause, Date.now(), raw)
    await client.taskqueueBury(this.processing, keys.dead, keys.tasks, keys.inflight, keys.recoveries, keys.deadIndex,
      id, entry, indexId, options.deadLetterMax as number, keys.base)
  }

  /**
   * Releases whatever is left in the processing list and leaves the consumer set, by `deadline`
   * (ms since the epoch); what is not done by then is left to recovery once the heartbeat expires.
   */
  async close (deadline = Date.now() + (this.queue.options.commandTimeout as number)): Promise<void> {
    this.liveness.stop()
    this.queue.connection.offLost(this.connectionLost)
    // A blocking read still waiting on the server takes no task (see waitForWork): it is dropped.
    this.blocking.close()
    if (this.started === undefined) return
    await this.liveness.leave(deadline, this.exchange.idle())
  }
}

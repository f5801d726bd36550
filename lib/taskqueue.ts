// `app.taskqueue`: the registered queues, their consumers, and the hand-over of tasks to queues.
import type { FastifyBaseLogger, FastifyInstance, FastifyRequest } from 'fastify'
import type { DeadLetter, DeadLetterPage, QueueBackend, TaskMessage } from '../types'
import { ClosedError, EnqueueFailedError, InvalidArgumentError, QueueFailedError, UnknownQueueError, shown } from './errors'
import { taskMessageFactory, type AddOptions, type CreateTaskMessage } from './message'
import { Consumer, uniqueConsumerName } from './consumer/consumer'
import { DispatchMarks } from './dispatch-mark'
import { RedisQueue } from './queues/redis'
import { checkEncodable } from './queues/codec'
import { byDeadline, closeSlack, handBackGrace } from './deadline'
import type { HeaderPolicy, ResolvedConsumerOptions } from './options'

/** What `app.taskqueue.queue(name)` gives: the queue seen from the app. */
export interface QueueHandle {
  readonly name: string
  /** Waiting tasks, not those in flight. */
  length (): Promise<number>
  /** Drops every waiting task. */
  reset (): Promise<void>
  /** Tasks set aside for good, newest first, a page at a time (default: the first 100). */
  dead (page?: DeadLetterPage): Promise<DeadLetter[]>
  /** Puts the dead letter of task `id` back into the queue, or every readable one; resolves to how many. */
  requeue (id?: string): Promise<number>
  /** Empties the dead letters; resolves to how many there were. */
  purge (): Promise<number>
}

function checkPage (page: DeadLetterPage | undefined): void {
  if (page === undefined) return
  // Object.keys(null) threw a TypeError, and a number or an array passed unchecked.
  if (page === null || typeof page !== 'object' || Array.isArray(page)) {
    throw new InvalidArgumentError(`dead(${shown(page)}): expected { offset?, limit? }, each an integer of 0 or more`)
  }
  for (const key of Object.keys(page)) {
    const value = (page as Record<string, unknown>)[key]
    if ((key !== 'offset' && key !== 'limit') || !Number.isInteger(value) || (value as number) < 0) {
      throw new InvalidArgumentError(`dead(${shown(page)}): expected { offset?, limit? }, each an integer of 0 or more`)
    }
  }
}

/**
 * Runs a queue call, turning a failure of its backend (ioredis' own errors, for a Redis that is
 * down) into FST_TASKQUEUE_QUEUE_FAILED naming the queue, the original as its cause. Errors that
 * already carry a code of the plugin's pass as they are.
 */
async function queueCall<T> (queue: string, call: string, work: () => Promise<T>): Promise<T> {
  try {
    return await work()
  } catch (error) {
    if (String((error as { code?: unknown })?.code).startsWith('FST_TASKQUEUE_')) throw error
    throw new QueueFailedError(queue, call, (error as Error)?.message ?? shown(error), { cause: error })
  }
}

/** How long a failed push after a response waits before it is tried again, at most. */
const pushRetryCeiling = 30_000

export class TaskQueueService {
  /** @internal The tokens of the dispatches in flight, that mark their requests as tasks. */
  readonly dispatchMarks = new DispatchMarks()
  private readonly backends = new Map<string, QueueBackend>()
  /** Queues whose tasks are pushed before the response is sent. */
  private readonly earlyQueues = new Set<string>()
  private readonly consumers: Consumer[] = []
  private readonly defaultQueue: string
  /** Requests that hold tasks not yet handed to their queues. */
  private heldRequests = 0
  /** Pushes started and not yet finished, with those waiting to be tried again. */
  private pendingPushes = 0
  /**
   * Per queue, the pushes waiting to be tried again after a failure, each as a function that tries
   * it at once: a push to that queue that succeeds shows that the cause has passed.
   */
  private readonly waitingRetries = new Map<string, Set<() => void>>()
  private drainWaiters: Array<() => void> = []
  /** Called once no push is pending: what close() waits for. */
  private pushWaiters: Array<() => void> = []
  /**
   * Set when the app began to close (preClose): the consumers stop, so a queue that is not shared
   * would keep a task added from now on until it is lost at close; it refuses it instead.
   */
  private closing = false
  /** Set when the connections close (onClose): no queue takes a task any more. */
  private closed = false
  /** When closing stops waiting for work (ms since the epoch): set as the consumers stop. */
  private closeDeadline: number | undefined

  constructor (
    private readonly app: FastifyInstance,
    private readonly log: FastifyBaseLogger,
    backends: QueueBackend[],
    earlyQueues: string[],
    headerPolicy: HeaderPolicy
  ) {
    this.createTaskMessage = taskMessageFactory(headerPolicy, this.resolveQueue)
    for (const backend of backends) this.backends.set(backend.name, backend)
    for (const name of earlyQueues) this.earlyQueues.add(name)
    // As in the original: the default queue is the alphabetically first.
    this.defaultQueue = [...this.backends.keys()].sort()[0]
  }

  /** The names of the registered queues. */
  get queueNames (): string[] {
    return [...this.backends.keys()]
  }

  private backend (name: string): QueueBackend {
    const backend = this.backends.get(name)
    if (backend === undefined) throw new UnknownQueueError(name, this.queueNames.join(', '))
    return backend
  }

  private readonly resolveQueue = (queue: string | undefined): string => {
    if (queue === undefined) return this.defaultQueue
    this.backend(queue)
    return queue
  }

  private readonly createTaskMessage: CreateTaskMessage

  /**
   * Throws FST_TASKQUEUE_CLOSED once the app began to close for a queue that is not shared (no
   * consumer here would run the task), and once the connections close for any queue.
   */
  createMessage (url: string, options: AddOptions | undefined, request: FastifyRequest | undefined): TaskMessage {
    if (this.closed) throw new ClosedError()
    const message = this.createTaskMessage(url, options, request)
    if (this.closing && !this.backend(message.queue).shared) throw new ClosedError()
    checkEncodable(message)
    return message
  }

  /**
   * Adds a task outside any request: it is queued at once. Bad arguments throw synchronously;
   * the promise resolves to the task id once the queue holds the task.
   */
  add (url: string, options?: AddOptions): Promise<string> {
    const message = this.createMessage(url, options, undefined)
    const backend = this.backend(message.queue)
    return queueCall(message.queue, 'add()', () => backend.put([message])).then(() => message.id)
  }

  /** A registered queue. Throws FST_TASKQUEUE_UNKNOWN_QUEUE for any other name. */
  queue (name: string): QueueHandle {
    const backend = this.backend(name)
    return {
      name,
      length: () => queueCall(name, 'length()', () => backend.length()),
      reset: () => queueCall(name, 'reset()', () => backend.reset()),
      dead: (page) => {
        checkPage(page)
        return queueCall(name, 'dead()', () => backend.dead(page))
      },
      requeue: (id) => {
        if (id !== undefined && typeof id !== 'string') throw new InvalidArgumentError(`requeue(id): expected a task id string, got ${shown(id)}`)
        return queueCall(name, 'requeue()', () => backend.requeue(id))
      },
      purge: () => queueCall(name, 'purge()', () => backend.purge())
    }
  }

  /**
   * Resolves once the queues that are not shared and have a consumer here hold no task (asked
   * through their `length()`), no task is in flight and no finished request still holds tasks.
   * Shared queues are not waited for: other processes may feed them forever; nor queues without
   * a consumer here, which nothing here would ever empty.
   */
  drain (): Promise<void> {
    return new Promise((resolve) => {
      this.drainWaiters.push(resolve)
      this.settled()
    })
  }

  /** Nothing held, pushed or in flight: what can be told without asking a backend. */
  private quiet (): boolean {
    if (this.heldRequests > 0 || this.pendingPushes > 0) return false
    for (const consumer of this.consumers) if (consumer.busy > 0) return false
    return true
  }

  /**
   * Whether the backends that drain() waits for are empty, and everything is still quiet once
   * they answered: a task a backend handed to its consumer meanwhile is then counted as busy
   * (the consumer counts it as soon as its reserve() resolved, which the contract asks of
   * length(): a task stops being counted once reserve() resolved with it).
   */
  private async idle (): Promise<boolean> {
    const lengths = await Promise.all(this.drainedBackends().map((backend) => backend.length()))
    return lengths.every((length) => length === 0) && this.quiet()
  }

  /** The backends not shared that a consumer here takes tasks from. */
  private drainedBackends (): QueueBackend[] {
    const backends = new Set<QueueBackend>()
    for (const consumer of this.consumers) {
      const backend = this.backend(consumer.queue)
      if (!backend.shared) backends.add(backend)
    }
    return [...backends]
  }

  /**
   * Called whenever work finished: wakes `drain()` callers once everything is idle. The backends
   * are asked only while someone waits for drain() and nothing is in flight.
   */
  readonly settled = (): void => {
    if (this.drainWaiters.length === 0 || !this.quiet()) return
    this.idle().then((idle) => {
      if (!idle) return
      const waiters = this.drainWaiters
      this.drainWaiters = []
      for (const resolve of waiters) resolve()
    }, (error: unknown) => {
      // The next task that settles asks again; a backend that keeps failing keeps drain() waiting.
      this.log.error({ err: error }, 'taskqueue: drain() could not ask a queue for its length')
    })
  }

  /** A request began (1) or stopped (-1) holding tasks. */
  holding (change: 1 | -1): void {
    this.heldRequests += change
    if (change === -1) this.settled()
  }

  /** Separates the tasks of `before-response` queues from the rest, which stay held. */
  takeEarlyTasks (held: TaskMessage[]): TaskMessage[] {
    if (this.earlyQueues.size === 0) return []
    const early = held.filter(({ queue }) => this.earlyQueues.has(queue))
    if (early.length > 0) {
      const rest = held.filter(({ queue }) => !this.earlyQueues.has(queue))
      held.splice(0, held.length, ...rest)
    }
    return early
  }

  /** Pushes tasks now; a failure rejects with FST_TASKQUEUE_ENQUEUE_FAILED. */
  async enqueueNow (tasks: TaskMessage[]): Promise<void> {
    try {
      await Promise.all(groupByQueue(tasks).map(([queue, batch]) => this.backend(queue).put(batch)))
    } catch (error) {
      throw new EnqueueFailedError((error as Error).message)
    }
  }

  /**
   * Hands the tasks of a sent response to their queues, one batch per queue in the order added.
   * A failed push is logged and tried again, with a growing delay, until the app closes; and at
   * once when another push to the same queue succeeds, so that the tasks of an outage land as
   * soon as the queue is back, not up to `pushRetryCeiling` later. Closing tries once more (see
   * close); a push that fails then is given up, its tasks logged as lost.
   */
  enqueueAfterResponse (tasks: TaskMessage[]): void {
    for (const [queue, batch] of groupByQueue(tasks)) {
      const backend = this.backend(queue)
      // Added before the app began to close, by a request answered after: its queue's consumers
      // stopped, so the tasks would only wait there to be lost at close, counted but not named.
      if (this.closing && !backend.shared) {
        this.log.error({ queue, taskIds: batch.map(({ id }) => id) }, 'taskqueue: tasks of a response sent while the app closes are lost: their local queue stopped')
        continue
      }
      this.pendingPushes++
      const push = (attempt: number): void => {
        backend.put(batch).then(() => {
          this.pushEnded()
          this.retryWaitingPushes(queue)
        }, (error: unknown) => {
          const taskIds = batch.map(({ id }) => id)
          if (this.closed) {
            this.log.error({ err: error, queue, taskIds, attempt }, 'taskqueue: queuing tasks failed as the app closed, they are lost')
            this.pushEnded()
            return
          }
          const delay = Math.min(pushRetryCeiling, 100 * 2 ** attempt)
          this.log.error({ err: error, queue, taskIds, attempt, delay }, 'taskqueue: queuing tasks failed, trying again')
          this.retryLater(queue, delay, () => push(attempt + 1))
        })
      }
      push(0)
    }
  }

  private pushEnded (): void {
    this.pendingPushes--
    if (this.pendingPushes === 0) {
      const waiters = this.pushWaiters
      this.pushWaiters = []
      for (const resolve of waiters) resolve()
    }
    this.settled()
  }

  /** Resolves once no push is pending, or after `timeout` ms; true if none is. */
  private pushesEnded (timeout: number): Promise<boolean> {
    if (this.pendingPushes === 0) return Promise.resolve(true)
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeout)
      this.pushWaiters.push(() => {
        clearTimeout(timer)
        resolve(true)
      })
    })
  }

  /** Runs `retry` after `delay` ms, or sooner when a push to `queue` succeeds meanwhile. */
  private retryLater (queue: string, delay: number, retry: () => void): void {
    const waiting = this.waitingRetries.get(queue) ?? new Set<() => void>()
    this.waitingRetries.set(queue, waiting)
    const now = (): void => {
      clearTimeout(timer)
      waiting.delete(now)
      retry()
    }
    const timer = setTimeout(now, delay)
    waiting.add(now)
  }

  private retryWaitingPushes (queue: string): void {
    // A copy: a retry that fails again adds itself back.
    for (const now of [...this.waitingRetries.get(queue) ?? []]) now()
  }

  /** Starts the consumers; with no consumer options, each queue not shared gets one. */
  startConsumers (options: ResolvedConsumerOptions[]): void {
    for (const consumerOptions of options) {
      const backend = this.backend(consumerOptions.queue)
      const name = consumerOptions.name ?? uniqueConsumerName()
      const consumer = new Consumer(name, backend.name, backend.receive(name), consumerOptions, {
        app: this.app,
        log: this.log,
        marks: this.dispatchMarks,
        onSettled: this.settled
      })
      this.consumers.push(consumer)
      consumer.start()
    }
  }

  /**
   * Says once, at start, of each Redis queue that nobody consumes (no consumer here, none in its
   * consumer set) that its tasks wait for another instance: otherwise such a queue fills in silence.
   */
  async announceUnconsumed (consumed: ReadonlySet<string>): Promise<void> {
    await Promise.all([...this.backends.values()].map(async (backend) => {
      if (!(backend instanceof RedisQueue) || consumed.has(backend.name)) return
      try {
        if (await backend.consumerCount() > 0) return
        this.log.info({ queue: backend.name }, 'taskqueue: no consumer of this Redis queue runs here or elsewhere now; its tasks wait for another instance to consume them')
      } catch (error) {
        this.log.debug({ err: error, queue: backend.name }, 'taskqueue: could not count the consumers of the queue')
      }
    }))
  }

  /**
   * First step of closing: no new task is taken; those in flight get up to `timeout` ms. This
   * starts the one deadline that every later step of closing shares.
   */
  async stopConsumers (timeout: number): Promise<void> {
    this.closing = true
    const deadline = this.closeDeadline ??= Date.now() + timeout
    await Promise.all(this.consumers.map((consumer) => consumer.stop(deadline, deadline + handBackGrace)))
  }

  /**
   * Last step of closing, once no request can add tasks any more. The tasks of sent responses that
   * are still to be pushed get what is left of the deadline, while the connections are open:
   * those waiting to be tried again after a failure are tried once more, now (a retry left for
   * later would have found the connection closed, and kept the process alive trying). Then the
   * queues close, by the same deadline.
   */
  async close (timeout: number): Promise<void> {
    this.closed = true
    const handBackBy = (this.closeDeadline ??= Date.now() + timeout) + handBackGrace
    for (const queue of [...this.waitingRetries.keys()]) this.retryWaitingPushes(queue)
    if (!await this.pushesEnded(Math.max(0, handBackBy - Date.now()))) {
      this.log.error({ pending: this.pendingPushes }, 'taskqueue: tasks still being queued when the app closed; they may be lost')
    }
    for (const backend of this.backends.values()) {
      if (backend.shared) continue
      const waiting = await backend.length()
      if (waiting > 0) this.log.warn({ queue: backend.name, waiting }, 'taskqueue: local tasks still waiting are lost at close')
    }
    await closeBackends([...this.backends.values()], handBackBy, this.log)
  }
}

/**
 * Closes the backends together by `deadline`, each given the deadline itself; a backend that
 * fails or overruns it is logged, and not waited for.
 */
export async function closeBackends (backends: QueueBackend[], deadline: number, log: FastifyBaseLogger): Promise<void> {
  await Promise.all(backends.map(async (backend) => {
    try {
      await byDeadline(backend.close(deadline), deadline + closeSlack, `closing queue "${backend.name}"`)
    } catch (error) {
      log.error({ err: error, queue: backend.name }, 'taskqueue: closing the queue failed')
    }
  }))
}

function groupByQueue (tasks: TaskMessage[]): Array<[string, TaskMessage[]]> {
  const byQueue = new Map<string, TaskMessage[]>()
  for (const task of tasks) {
    const batch = byQueue.get(task.queue)
    if (batch === undefined) byQueue.set(task.queue, [task])
    else batch.push(task)
  }
  return [...byQueue]
}

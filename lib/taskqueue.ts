// `app.taskqueue`: the registered queues, their consumers, and the hand-over of tasks to queues.
import type { FastifyBaseLogger, FastifyInstance, FastifyRequest } from 'fastify'
import type { DeadLetter, DeadLetterPage, QueueBackend, TaskMessage } from '../types'
import { ClosedError, EnqueueFailedError, InvalidArgumentError, UnknownQueueError, shown } from './errors'
import { taskMessageFactory, type AddOptions, type CreateTaskMessage } from './message'
import { Consumer, uniqueConsumerName } from './consumer'
import { createDispatchKey } from './dispatch-mark'
import { LocalQueue } from './queues/local'
import { checkEncodable } from './queues/codec'
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

/** How long a failed push after a response waits before it is tried again, at most. */
const pushRetryCeiling = 30_000

export class TaskQueueService {
  readonly dispatchKey = createDispatchKey()
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
  private closed = false

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

  createMessage (url: string, options: AddOptions | undefined, request: FastifyRequest | undefined): TaskMessage {
    if (this.closed) throw new ClosedError()
    const message = this.createTaskMessage(url, options, request)
    checkEncodable(message)
    return message
  }

  /**
   * Adds a task outside any request: it is queued at once. Bad arguments throw synchronously;
   * the promise resolves to the task id once the queue holds the task.
   */
  add (url: string, options?: AddOptions): Promise<string> {
    const message = this.createMessage(url, options, undefined)
    return this.backend(message.queue).put([message]).then(() => message.id)
  }

  /** A registered queue. Throws FST_TASKQUEUE_UNKNOWN_QUEUE for any other name. */
  queue (name: string): QueueHandle {
    const backend = this.backend(name)
    return {
      name,
      length: () => backend.length(),
      reset: () => backend.reset(),
      dead: (page) => {
        checkPage(page)
        return backend.dead(page)
      },
      requeue: (id) => {
        if (id !== undefined && typeof id !== 'string') throw new InvalidArgumentError(`requeue(id): expected a task id string, got ${shown(id)}`)
        return backend.requeue(id)
      },
      purge: () => backend.purge()
    }
  }

  /**
   * Resolves once the local queues that have a consumer here are empty, no task is in flight and
   * no finished request still holds tasks. Shared queues are not waited for: other processes may
   * feed them forever.
   */
  drain (): Promise<void> {
    if (this.idle()) return Promise.resolve()
    return new Promise((resolve) => this.drainWaiters.push(resolve))
  }

  private idle (): boolean {
    if (this.heldRequests > 0 || this.pendingPushes > 0) return false
    for (const consumer of this.consumers) {
      if (consumer.busy > 0) return false
      const backend = this.backends.get(consumer.queue)
      if (backend instanceof LocalQueue && backend.size + backend.reserved > 0) return false
    }
    return true
  }

  /** Called whenever work finished: wakes `drain()` callers once everything is idle. */
  readonly settled = (): void => {
    if (this.drainWaiters.length === 0 || !this.idle()) return
    const waiters = this.drainWaiters
    this.drainWaiters = []
    for (const resolve of waiters) resolve()
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
        dispatchKey: this.dispatchKey,
        onSettled: this.settled
      })
      this.consumers.push(consumer)
      consumer.start()
    }
  }

  /** First step of closing: no new task is taken; those in flight get up to `timeout` ms. */
  async stopConsumers (timeout: number): Promise<void> {
    await Promise.all(this.consumers.map((consumer) => consumer.stop(timeout)))
  }

  /**
   * Last step of closing, once no request can add tasks any more. The tasks of sent responses that
   * are still to be pushed get up to `timeout` ms, while the connections are open: those waiting
   * to be tried again after a failure are tried once more, now (a retry left for later would have
   * found the connection closed, and kept the process alive trying).
   */
  async close (timeout: number): Promise<void> {
    this.closed = true
    for (const queue of [...this.waitingRetries.keys()]) this.retryWaitingPushes(queue)
    if (!await this.pushesEnded(timeout)) {
      this.log.error({ pending: this.pendingPushes }, 'taskqueue: tasks still being queued when the app closed; they may be lost')
    }
    for (const backend of this.backends.values()) {
      if (backend.shared) continue
      const waiting = await backend.length()
      if (waiting > 0) this.log.warn({ queue: backend.name, waiting }, 'taskqueue: local tasks still waiting are lost at close')
    }
    for (const backend of this.backends.values()) {
      try {
        await backend.close()
      } catch (error) {
        this.log.error({ err: error, queue: backend.name }, 'taskqueue: closing the queue failed')
      }
    }
  }
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

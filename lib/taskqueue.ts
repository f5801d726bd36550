// `app.taskqueue`: the registered queues, their consumers, and the hand-over of tasks to queues.
import type { FastifyBaseLogger, FastifyInstance, FastifyRequest } from 'fastify'
import type { AddOptions, QueueBackend, QueueHandle, QueueType, ScheduleInfo, TaskMessage, TaskQueue } from '../types'
import { ClosedError, EnqueueFailedError, UnknownQueueError } from './errors'
import { checkId, checkPage, optionalCall, queueCall } from './queue-calls'
import { taskMessageFactory, type CreateTaskMessage } from './message'
import { Consumer, uniqueConsumerName } from './consumer/consumer'
import { DispatchMarks } from './request/mark'
import { ResponsePushes } from './request/pushes'
import { checkEncodable } from './queues/codec'
import { byDeadline, closeSlack, releaseGrace } from './deadline'
import { resolveConsumer, type ResolvedConsumerOptions, type ResolvedOptions } from './options'
import type { TaskEvents } from './instrumentation/channels'
import { traceCarrier } from './instrumentation/tracing'
import { Scheduler } from './schedules/scheduler'

export class TaskQueueService implements TaskQueue {
  /** The tokens of the dispatches in flight, that mark their requests as tasks. */
  readonly dispatchMarks = new DispatchMarks()
  /** Where this app's task lifecycle is published. */
  readonly events: TaskEvents
  private readonly app: FastifyInstance
  private readonly log: FastifyBaseLogger
  private readonly backends = new Map<string, QueueBackend>()
  private readonly queueTypes = new Map<string, QueueType>()
  private readonly defaultQueue: string
  /** Queues whose tasks are pushed before the response is sent. */
  private readonly earlyQueues = new Set<string>()
  /** The consumer options given, or undefined: one consumer per queue that is not shared. */
  private readonly consumerOptions: ResolvedConsumerOptions[] | undefined
  private readonly consumers: Consumer[] = []
  private readonly createTaskMessage: CreateTaskMessage
  /** The tasks of sent responses still to be pushed to their queues. */
  private readonly pushes: ResponsePushes
  /** Requests that hold tasks not yet handed to their queues. */
  private heldRequests = 0
  private drainWaiters: Array<() => void> = []
  private readonly closeTimeout: number
  /**
   * Set when the app began to close (preClose): the consumers stop, so a queue that is not shared
   * would keep a task added from now on until it is lost at close; it refuses it instead.
   */
  private closing = false
  /** Set when the connections close (onClose): no queue takes a task any more. */
  private closed = false
  /** When closing stops waiting for work (ms since the epoch): set as the consumers stop. */
  private closeDeadline: number | undefined
  /** The `schedules` option at work: started with the consumers, stopped before them. */
  readonly scheduler: Scheduler

  constructor (app: FastifyInstance, backends: QueueBackend[], options: ResolvedOptions, events: TaskEvents) {
    this.app = app
    this.log = app.log
    this.events = events
    events.taskqueue = this
    for (const backend of backends) this.backends.set(backend.name, backend)
    // As in the original: the default queue is the alphabetically first.
    this.defaultQueue = [...this.backends.keys()].sort()[0]
    for (const { queue, enqueueMode, type } of options.queues) {
      if (enqueueMode === 'before-response') this.earlyQueues.add(queue)
      this.queueTypes.set(queue, typeof type === 'string' ? type : 'custom')
    }
    this.consumerOptions = options.consumers
    this.closeTimeout = options.closeTimeout
    this.createTaskMessage = taskMessageFactory(options.headerPolicy, this.resolveQueue)
    this.pushes = new ResponsePushes(this.log, this.checkDrained, (batch) => { events.enqueued(batch) })
    this.scheduler = new Scheduler(options.schedules, {
      log: this.log,
      createMessage: (url, addOptions) => this.createMessage(url, addOptions, undefined),
      backend: (queue) => this.backend(queue),
      enqueued: (message) => { events.enqueued([message]) }
    })
  }

  /**
   * Resolves once every backend can take tasks. If one cannot (a Redis that cannot be reached),
   * every backend is closed, those that did connect included: an open connection would keep the
   * process alive after its start-up failed. Then it rejects with the first failure.
   */
  async open (): Promise<void> {
    const started = await Promise.allSettled([...this.backends.values()].map(async (backend) => { await backend.ready?.() }))
    const failed = started.find((result) => result.status === 'rejected')
    if (failed === undefined) return
    await closeBackends([...this.backends.values()], Date.now() + this.closeTimeout, this.log)
    throw failed.reason
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

  /**
   * Adds a task outside any request: it is queued at once. Bad arguments throw synchronously;
   * the promise resolves to the task id once the queue holds the task.
   */
  add (url: string, options?: AddOptions): Promise<string> {
    const message = this.createMessage(url, options, undefined)
    const backend = this.backend(message.queue)
    return queueCall(message.queue, 'add()', () => backend.put([message])).then(() => {
      this.events.enqueued([message])
      return message.id
    })
  }

  /** The schedules, with the next tick each will add. */
  schedules (): ScheduleInfo[] {
    return this.scheduler.list()
  }

  /** A registered queue. Throws FST_TASKQUEUE_UNKNOWN_QUEUE for any other name. */
  queue (name: string): QueueHandle {
    const backend = this.backend(name)
    return {
      name,
      type: this.queueTypes.get(name) ?? 'custom',
      length: () => queueCall(name, 'length()', () => backend.length()),
      reset: () => queueCall(name, 'reset()', () => backend.reset()),
      dead: (page) => {
        checkPage('dead', page)
        return queueCall(name, 'dead()', () => backend.dead(page))
      },
      requeue: (id) => {
        if (id !== undefined) checkId('requeue', id)
        return queueCall(name, 'requeue()', () => backend.requeue(id))
      },
      purge: () => queueCall(name, 'purge()', () => backend.purge()),
      stats: () => optionalCall(backend, 'stats', (stats) => stats.call(backend)),
      pause: () => optionalCall(backend, 'pause', (pause) => pause.call(backend)),
      resume: () => optionalCall(backend, 'resume', (resume) => resume.call(backend)),
      isPaused: () => optionalCall(backend, 'isPaused', (isPaused) => isPaused.call(backend)),
      get: (id) => {
        checkId('get', id)
        return optionalCall(backend, 'get', (get) => get.call(backend, id))
      },
      cancel: (id) => {
        // Checked before any await, so that a bad id throws at once like the other calls.
        checkId('cancel', id)
        return optionalCall(backend, 'cancel', (cancel) => cancel.call(backend, id)).then((cancelled) => {
          if (cancelled) this.events.cancelled(name, id)
          return cancelled
        })
      },
      waiting: (page) => {
        checkPage('waiting', page)
        return optionalCall(backend, 'waiting', (waiting) => waiting.call(backend, page))
      }
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
      this.checkDrained()
    })
  }

  /** Nothing held, pushed or in flight: what can be told without asking a backend. */
  private quiet (): boolean {
    if (this.heldRequests > 0 || this.pushes.count > 0) return false
    for (const consumer of this.consumers) if (consumer.busy > 0) return false
    return true
  }

  /**
   * Whether the backends that drain() waits for are empty, and everything is still quiet once
   * they answered: a task a consumer reserved meanwhile is then counted as busy (the consumer
   * counts it as soon as its reserve() resolved, which the contract asks of length(): a task
   * stops being counted once reserve() resolved with it).
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
  readonly checkDrained = (): void => {
    if (this.drainWaiters.length === 0 || !this.quiet()) return
    this.idle().then((idle) => {
      if (!idle) return
      const waiters = this.drainWaiters
      this.drainWaiters = []
      for (const resolve of waiters) resolve()
    }, (error: unknown) => {
      // The next work that finishes asks again; a backend that keeps failing keeps drain() waiting.
      this.log.error({ err: error }, 'taskqueue: drain() could not ask a queue for its length')
    })
  }

  // What follows serves the request side (lib/request/) and the plugin's hooks: members of the
  // class only, not of the TaskQueue interface that users see.

  /**
   * Throws FST_TASKQUEUE_CLOSED once the app began to close for a queue that is not shared (no
   * consumer here would run the task), and once the connections close for any queue.
   */
  createMessage (url: string, options: AddOptions | undefined, request: FastifyRequest | undefined): TaskMessage {
    if (this.closed) throw new ClosedError()
    const message = this.createTaskMessage(url, options, request)
    if (this.closing && !this.backend(message.queue).shared) throw new ClosedError()
    // The trace context add() ran in, when the app traces: each try of the task continues it.
    const trace = traceCarrier()
    if (trace !== undefined) message.trace = trace
    checkEncodable(message)
    return message
  }

  /** A request began (1) or stopped (-1) holding tasks. */
  holding (change: 1 | -1): void {
    this.heldRequests += change
    if (change === -1) this.checkDrained()
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
  async pushNow (tasks: TaskMessage[]): Promise<void> {
    try {
      await Promise.all(groupByQueue(tasks).map(async ([queue, batch]) => {
        await this.backend(queue).put(batch)
        this.events.enqueued(batch)
      }))
    } catch (error) {
      throw new EnqueueFailedError((error as Error).message)
    }
  }

  /**
   * Hands the tasks of a sent response to their queues, one batch per queue in the order added; a
   * failed push is tried again until the app closes (see ResponsePushes).
   */
  pushAfterResponse (tasks: TaskMessage[]): void {
    for (const [queue, batch] of groupByQueue(tasks)) {
      const backend = this.backend(queue)
      // Added before the app began to close, by a request answered after: its queue's consumers
      // stopped, so the tasks would only wait there to be lost at close, counted but not named.
      if (this.closing && !backend.shared) {
        this.log.error({ queue, taskIds: batch.map(({ id }) => id) }, 'taskqueue: tasks of a response sent while the app closes are lost: their local queue stopped')
        continue
      }
      this.pushes.push(backend, batch)
    }
  }

  /**
   * Once the app is ready: starts the consumers (with no consumer options, each queue not shared
   * gets one), then tells of the Redis queues that nobody consumes.
   */
  async start (): Promise<void> {
    const options = this.consumerOptions ??
      [...this.backends.values()].filter(({ shared }) => !shared).map(({ name }) => resolveConsumer({ queue: name }))
    this.startConsumers(options)
    this.scheduler.start()
    await this.announceUnconsumed(new Set(options.map(({ queue }) => queue)))
  }

  private startConsumers (options: ResolvedConsumerOptions[]): void {
    for (const consumerOptions of options) {
      const backend = this.backend(consumerOptions.queue)
      const name = consumerOptions.name ?? uniqueConsumerName()
      const consumer = new Consumer(name, backend.name, backend.receive(name), consumerOptions, {
        app: this.app,
        log: this.log,
        marks: this.dispatchMarks,
        onSettled: this.checkDrained,
        events: this.events
      })
      this.consumers.push(consumer)
      consumer.start()
    }
  }

  /**
   * Says once, at start, of each shared queue that nobody consumes (no consumer here, none that its
   * backend knows of elsewhere) that its tasks wait for another instance: otherwise such a queue
   * fills in silence. A backend that cannot count its consumers is not asked.
   */
  private async announceUnconsumed (consumed: ReadonlySet<string>): Promise<void> {
    await Promise.all([...this.backends.values()].map(async (backend) => {
      if (!backend.shared || backend.consumerCount === undefined || consumed.has(backend.name)) return
      try {
        if (await backend.consumerCount() > 0) return
        this.log.info({ queue: backend.name }, 'taskqueue: no consumer of this shared queue runs here or elsewhere now; its tasks wait for another instance to consume them')
      } catch (error) {
        this.log.debug({ err: error, queue: backend.name }, 'taskqueue: could not count the consumers of the queue')
      }
    }))
  }

  /**
   * First step of closing (preClose): no new task is taken; those in flight get up to
   * `closeTimeout` ms. This starts the one deadline that every later step of closing shares.
   */
  async stopConsumers (): Promise<void> {
    this.scheduler.stop()
    this.closing = true
    const deadline = this.closeDeadline ??= Date.now() + this.closeTimeout
    await Promise.all(this.consumers.map((consumer) => consumer.stop(deadline, deadline + releaseGrace)))
  }

  /**
   * Last step of closing (onClose), once no request can add tasks any more. The tasks of sent
   * responses that are still to be pushed get what is left of the deadline, while the connections
   * are open (see ResponsePushes.finish). Then the queues close, by the same deadline.
   */
  async close (): Promise<void> {
    this.closed = true
    const releaseBy = (this.closeDeadline ??= Date.now() + this.closeTimeout) + releaseGrace
    // A tick's add on its way finishes while the connections are open.
    await byDeadline(this.scheduler.settled(), releaseBy, 'adding the tasks of ticks').catch(() => {})
    if (!await this.pushes.finish(Math.max(0, releaseBy - Date.now()))) {
      this.log.error({ pending: this.pushes.count }, 'taskqueue: tasks still being queued when the app closed; they may be lost')
    }
    for (const backend of this.backends.values()) {
      if (backend.shared) continue
      const waiting = await backend.length()
      if (waiting > 0) this.log.warn({ queue: backend.name, waiting }, 'taskqueue: local tasks still waiting are lost at close')
    }
    await closeBackends([...this.backends.values()], releaseBy, this.log)
  }
}

/**
 * Closes the backends together by `deadline`, each given the deadline itself; a backend that
 * fails or overruns it is logged, and not waited for.
 */
async function closeBackends (backends: QueueBackend[], deadline: number, log: FastifyBaseLogger): Promise<void> {
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

// Public types of a queue backend: the task message and dead letter as a queue stores them, the
// figures and pages it answers, and the interface that the local and Redis queues implement (and
// that a user may implement for a queue of their own). types/index.ts re-exports all of it; this
// file imports nothing from there, so the two form no cycle.
import type { FastifyBaseLogger } from 'fastify'

/** The HTTP methods a task may use. */
export type TaskMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE'

/** The schedule and tick a task of a schedule was added for. */
export interface ScheduleTick {
  /** The schedule's name. */
  name: string
  /** The tick: when the cron expression fired (ms since the epoch in a message, a Date for the route). */
  tick: number
}

/** What `stats()` tells of a queue. */
export interface QueueStats {
  /** Tasks due and waiting for a consumer. */
  waiting: number
  /** Tasks waiting for their eta: a delay or a retry. */
  delayed: number
  /** Tasks a consumer reserved and has not settled. */
  inFlight: number
  /** Dead letters. */
  dead: number
  paused: boolean
  /** Milliseconds since the longest-waiting task became due, or null when no task waits. */
  oldestWaitingAge: number | null
}

/** Where a task is in its life. */
export type TaskState = 'waiting' | 'delayed' | 'in-flight' | 'dead'

/** What `get()` and `waiting()` tell of a task. */
export interface TaskInfo {
  id: string
  state: TaskState
  url: string
  method: TaskMethod
  /** Lower-case header names, as the task will be sent (credentials included). */
  headers: Record<string, string>
  retries: number
  /** When the task was added (ms since the epoch). */
  createdAt: number
  /** When the task is, or was, due (ms since the epoch). */
  eta: number
  /** The task's group, when it was added with one. */
  group?: string
}

/** A page of a list: `offset` entries skipped, at most `limit` given. */
export interface TaskPage {
  offset?: number
  limit?: number
}

/**
 * One queued task: everything needed to replay it as a request of this app. Version 1 of the
 * message format; the Redis queue stores it as JSON, with a binary payload in base64.
 */
export interface TaskMessage {
  v: 1
  /** Task id: a UUID, or the id the caller chose. Sent as `x-task-id`. */
  id: string
  queue: string
  /** Path of this app, with its query string. */
  url: string
  method: TaskMethod
  /** Lower-case header names. */
  headers: Record<string, string>
  /** Request body as it will be sent: text or bytes, or absent. */
  payload?: string | Buffer
  /** How many times the task was dispatched again after a retryable outcome. */
  retries: number
  /** Milliseconds since the epoch when the task was added. */
  createdAt: number
  /** Milliseconds since the epoch before which the task does not run (its delay, or its retry's). */
  eta: number
  /** Set when the caller chose the id: while such a task lives, adding the same id again is a no-op. */
  named?: true
  /** The task's group, when it was added with one (see `AddOptions.group`). */
  group?: string
  /**
   * The trace context of the code that added the task, as the app's OpenTelemetry propagator wrote
   * it (`traceparent`, ...). Only there when a propagator wrote something: without an SDK, none.
   */
  trace?: Record<string, string>
  /** Set on the task of a schedule's tick: which schedule, which tick (`x-task-schedule`, `x-task-tick`). */
  schedule?: ScheduleTick
}

/** Why a task ended in the dead letters. */
export type DeadLetterReason =
  /** It kept getting retryable outcomes until `retryMaxCount` was spent. */
  | 'retries exhausted'
  /** It got a status that no retry can fix (a 4xx other than 409 and 429, or 501). */
  | 'final status'
  /** Its last try ran past `taskTimeout`. */
  | 'timeout'
  /** Its consumers kept expiring (their heartbeat stopped) while running it: a poison pill. */
  | 'recovered too often'
  /** What the queue held could not be read as a task of this queue. */
  | 'unreadable'

/** A dead letter: a buried task, which will not run again unless it is requeued. */
export interface DeadLetter {
  /** The task id, or null when the message was unreadable. */
  id: string | null
  queue: string
  reason: DeadLetterReason
  /** What went wrong, in words. */
  detail?: string
  /** Status of the last try, when there was one. */
  statusCode?: number
  /**
   * The start of the body of the answer that killed the task: its first 1024 bytes as UTF-8 text
   * (cut on a character boundary), or `<binary body, N bytes>` when they are not UTF-8.
   */
  body?: string
  /** When the task was buried (ms since the epoch). */
  at: number
  /** The task, or null when the message was unreadable. */
  task: TaskMessage | null
  /** The message as the queue held it, when it was unreadable. */
  raw?: string
}

/** Why a consumer buries a task. */
export interface DeadLetterCause {
  reason: DeadLetterReason
  detail?: string
  statusCode?: number
  /** The start of the answer's body (see `DeadLetter.body`). */
  body?: string
}

/** A page of dead letters (newest first): the same shape as a page of tasks. */
export type DeadLetterPage = TaskPage

/** A task a consumer reserved, to be settled exactly once: ack, retry, release or bury. */
export interface ReservedTask {
  readonly message: TaskMessage
}

/**
 * The consuming side of a queue for one consumer: what it reserved is its own until it settles
 * it.
 */
export interface TaskReceiver {
  /**
   * Resolves with the next task as soon as one is available, or with `null` once `signal` is
   * aborted. Only one `reserve()` of a receiver is pending at a time. `room` is how many tasks the
   * consumer could start now (at least 1): a backend may reserve that many in one go and hand
   * them out on the next calls.
   */
  reserve (signal: AbortSignal, room: number): Promise<ReservedTask | null>
  /** Ack: the task is done, forget it. */
  ack (task: ReservedTask): Promise<void>
  /** Dispatch the task again after `delayMs`, its retry count raised by one. */
  retry (task: ReservedTask, delayMs: number): Promise<void>
  /** Put the task back unchanged, as if it had never been reserved: not a try (used when the app closes). */
  release (task: ReservedTask): Promise<void>
  /** Bury the task: move it to the queue's dead letters. */
  bury (task: ReservedTask, cause: DeadLetterCause): Promise<void>
  /**
   * Stop receiving: called once, after every reserved task was settled or the close deadline
   * passed. `deadline` (ms since the epoch) is when the app stops waiting for it.
   */
  close (deadline?: number): Promise<void>
}

/** A queue backend. `local` and `redis` implement it; pass your own as a queue's `type`. */
export interface QueueBackend {
  readonly name: string
  /**
   * True when other processes can see the queue. Shared queues get no consumer by default, and
   * their waiting tasks are not waited for by `drain()` nor counted as lost on close.
   */
  readonly shared: boolean
  /** Called while the plugin starts: resolve when the backend can take tasks, reject if it cannot. */
  ready? (): Promise<void>
  /**
   * Appends the tasks, in order. A task whose `eta` is in the future waits until then; a `named`
   * task whose id is waiting, delayed or in flight is dropped.
   */
  put (tasks: readonly TaskMessage[]): Promise<void>
  /**
   * How many consumers, in any process, take tasks from a shared queue now. Optional: when a
   * shared queue has none here nor elsewhere at start, the plugin says so in its log.
   */
  consumerCount? (): Promise<number>
  /**
   * Adds the task of one tick of a schedule (its `schedule` set), unless this queue recorded that
   * tick, or a later one, of the same schedule as added: across every process that shares the
   * queue, atomically with the add. Resolves to whether it added it. Optional: without it, the
   * plugin adds each tick with `put()` once per process, and its task id keeps a second process
   * from adding it again only while the task lives.
   */
  putTick? (task: TaskMessage): Promise<boolean>
  /** Opens the consuming side for one consumer name. */
  receive (consumerName: string): TaskReceiver
  /**
   * Waiting tasks, including those waiting for their `eta`, not those in flight. A backend that is
   * not `shared` must count every task it holds until a `reserve()` has resolved with it: while
   * someone awaits `app.taskqueue.drain()`, this is how the plugin knows the backend still has work.
   */
  length (): Promise<number>
  /** Drops every waiting task. */
  reset (): Promise<void>
  /** Lists dead letters, newest first. */
  dead (page?: DeadLetterPage): Promise<DeadLetter[]>
  /** Puts the dead letter of one task id, or all that are readable, back into the queue; resolves to how many. */
  requeue (id?: string): Promise<number>
  /** Empties the dead letters; resolves to how many there were. */
  purge (): Promise<number>
  // What follows lets users see into the queue and steer it. The built-in backends implement all
  // of it; a backend of your own may leave any out, and the handle's method then rejects with
  // FST_TASKQUEUE_UNSUPPORTED.
  /** The queue's figures (see `QueueHandle.stats`). */
  stats? (): Promise<QueueStats>
  /** Stops every consumer of the queue from reserving, until `resume()` (see `QueueHandle.pause`). */
  pause? (): Promise<void>
  resume? (): Promise<void>
  isPaused? (): Promise<boolean>
  /** A live or dead task by id, in a bounded number of steps (no scan of the queue). */
  get? (id: string): Promise<TaskInfo | null>
  /** Forgets a waiting or delayed task for good, freeing its id; false for any other. */
  cancel? (id: string): Promise<boolean>
  /** The waiting tasks due now, next to run first. */
  waiting? (page?: TaskPage): Promise<TaskInfo[]>
  /**
   * Called once when the app closes, after every receiver was closed. `deadline` (ms since the
   * epoch) is when the app stops waiting for it: past it, drop what is pending.
   */
  close (deadline?: number): Promise<void>
}

/** What a backend factory receives. */
export interface QueueBackendContext {
  queue: string
  log: FastifyBaseLogger
}

/** A function that makes a backend for a queue name. */
export type QueueBackendFactory = (context: QueueBackendContext) => QueueBackend

// Public types of fastify-taskqueue: what `app.taskqueue` and `request.taskqueue` offer, the
// messages of the task channels, and the Fastify augmentation; the task message and the queue
// backend interface are in ./backend.ts, re-exported here. It imports nothing from lib/: the
// classes there implement these interfaces, so a user sees only what they declare.
import type {
  DeadLetter, DeadLetterPage, DeadLetterReason, QueueStats, TaskInfo, TaskMessage, TaskMethod, TaskPage
} from './backend'

export * from './backend'

type ParamValue = string | number | boolean

/**
 * The options of `add()`. Every one is checked at run time by the schema in lib/message.ts, which a
 * type test keeps equal to this interface.
 */
export interface AddOptions {
  /** HTTP method of the task request (default `GET`). */
  method?: TaskMethod
  /** Url-encoded onto the url as its query string; arrays become repeated keys. */
  params?: Record<string, ParamValue | ParamValue[]>
  /** Headers of the task request; they win over those copied from the current request. */
  headers?: Record<string, string>
  /**
   * Body of the task request. Left out: the current request's body. `null`: none. An object or
   * array is sent as JSON, a string or a Buffer as it is.
   */
  payload?: Record<string, unknown> | unknown[] | string | Buffer | Uint8Array | null
  /** Queue name; the default is the alphabetically first registered queue. */
  queue?: string
  /**
   * A task id of the caller's choosing (1 to 200 of `A-Z a-z 0-9 _ . : -`). While a task with this
   * id is waiting, delayed or in flight, adding it again is a no-op that returns the same id.
   */
  id?: string
  /**
   * The group of the task (the characters and length of an id). At most the queue's
   * `groupConcurrency` tasks of one group are in flight at once, and the groups with waiting tasks
   * take turns (see the README, Groups).
   */
  group?: string
  /** Milliseconds to wait before the task may run (at most a year). */
  delay?: number
  /** The task does not run before this moment. */
  notBefore?: Date
}

/** `app.taskqueue`: the registered queues, seen from the app. */
export interface TaskQueue {
  /** The names of the registered queues. */
  readonly queueNames: string[]
  /**
   * Adds a task outside any request: it is queued at once. A bad argument throws synchronously;
   * the promise resolves to the task id once the queue holds the task.
   */
  add (url: string, options?: AddOptions): Promise<string>
  /** A registered queue. Throws FST_TASKQUEUE_UNKNOWN_QUEUE for any other name. */
  queue (name: string): QueueHandle
  /**
   * Resolves once the queues that are not shared and have a consumer here hold no task, no task
   * is in flight and no finished request still holds tasks.
   */
  drain (): Promise<void>
  /** The schedules of this app (the `schedules` option), each with the next tick it will add. */
  schedules (): ScheduleInfo[]
}

/** What `app.taskqueue.schedules()` tells of a schedule. */
export interface ScheduleInfo {
  name: string
  cron: string
  /** The IANA time zone the cron fields are read in. */
  timezone: string
  queue: string
  /** The next tick this instance will add, or null when there is none (the app closed, or the cron has no later date). */
  nextRun: Date | null
}

/** `request.taskqueue`: the tasks of one request. */
export interface RequestTaskQueue {
  /** The task this request runs, when a consumer of this app dispatched it; else null. */
  readonly task: DispatchedTask | null
  /**
   * Adds a task, held with the request and queued once its response was sent with a status below
   * 400. Returns the task id at once; a bad argument throws a coded error.
   */
  add (url: string, options?: AddOptions): string
}

/** What `app.taskqueue.queue(name)` gives: the queue seen from the app. */
export interface QueueHandle {
  readonly name: string
  /** `local`, `redis`, or `custom` for a backend of your own. */
  readonly type: QueueType
  /** Waiting tasks, not those in flight. */
  length (): Promise<number>
  /** Drops every waiting task. */
  reset (): Promise<void>
  /** The dead letters, newest first, a page at a time (default: the first 100). */
  dead (page?: DeadLetterPage): Promise<DeadLetter[]>
  /** Puts the dead letter of task `id` back into the queue, or every readable one; resolves to how many. */
  requeue (id?: string): Promise<number>
  /** Empties the dead letters; resolves to how many there were. */
  purge (): Promise<number>
  /** The queue's figures: on a shared queue, across every instance. */
  stats (): Promise<QueueStats>
  /**
   * No consumer starts a new task of the queue until `resume()`; tasks in flight finish and `add()`
   * still queues. On a shared queue every instance stops within about a second, and the pause
   * outlives a restart of any of them.
   */
  pause (): Promise<void>
  resume (): Promise<void>
  isPaused (): Promise<boolean>
  /** A task that is waiting, delayed, in flight or dead, or null when the queue knows no such id. */
  get (id: string): Promise<TaskInfo | null>
  /**
   * Resolves to true when the task was waiting or delayed and will now never run (it is forgotten,
   * and its id is free again); false when it is in flight, done, dead or unknown.
   */
  cancel (id: string): Promise<boolean>
  /** The waiting tasks due now, next to run first, a page at a time (default: the first 100). */
  waiting (page?: TaskPage): Promise<TaskInfo[]>
}

/** The kind of backend behind a queue. */
export type QueueType = 'local' | 'redis' | 'custom'

/** What `request.taskqueue.task` holds for a dispatched task. */
export interface DispatchedTask {
  id: string
  queue: string
  /** Retries so far (`x-task-retries`). */
  retries: number
  /** When this try was due to run (`x-task-eta`, ISO 8601). */
  eta: Date
  /** When the task was added (`x-task-created-at`, ISO 8601). */
  createdAt: Date
  /** The task's group (`x-task-group`), when it was added with one. */
  group?: string
  /**
   * For the task of a schedule: the schedule's name and the tick it was added for
   * (`x-task-schedule`, `x-task-tick`, ISO 8601). Absent from every other task.
   */
  schedule?: { name: string, tick: Date }
}

// The task lifecycle on Node's diagnostics_channel: one channel per event, each message one of the
// interfaces below. Every message names the `app.taskqueue` that published it, so that a
// subscriber of a process with several apps can keep to its own.

/** The names of the channels (`taskqueueChannels` holds them too). */
export interface TaskQueueChannelNames {
  enqueued: 'taskqueue:task:enqueued'
  started: 'taskqueue:task:started'
  finished: 'taskqueue:task:finished'
  retried: 'taskqueue:task:retried'
  dead: 'taskqueue:task:dead'
  recovered: 'taskqueue:task:recovered'
  cancelled: 'taskqueue:task:cancelled'
}

/** What every message of a task's channels holds. */
export interface TaskEventBase {
  /** The `app.taskqueue` whose queue or consumer this happened in. */
  taskqueue: TaskQueue
  queue: string
}

/**
 * `taskqueue:task:enqueued`: a task added with `add()` is in its queue (once per task, after the
 * queue took it; a retry or a requeued dead letter is not published again).
 */
export interface TaskEnqueuedEvent extends TaskEventBase {
  id: string
  /** The task as it was queued (its headers included). */
  task: TaskMessage
}

/** `taskqueue:task:started`: a consumer of this process starts a try of the task. */
export interface TaskStartedEvent extends TaskEventBase {
  id: string
  /** Retries before this try. */
  retries: number
  /** The consumer's name. */
  consumer: string
  /** When the try was due (ms since the epoch). */
  eta: number
  /** Milliseconds from the due time to the start of this try (0 when it started early). */
  waitMs: number
}

/** How a try ended: `answered` (with its status), `timeout`, or `error` (inject() failed). */
export type TaskOutcome = 'answered' | 'timeout' | 'error'

/** What the consumer does next with a task whose try ended. */
export type TaskNextStep = 'done' | 'retry' | 'dead' | 'released'

/** `taskqueue:task:finished`: a try of the task ended. */
export interface TaskFinishedEvent extends TaskEventBase {
  id: string
  retries: number
  /** The request id of the try, as the request's log lines carry it (unset when it had none). */
  reqId?: string
  outcome: TaskOutcome
  /** The status of the answer, for an `answered` outcome. */
  statusCode?: number
  /** What failed, for an `error` outcome. */
  error?: unknown
  /** Milliseconds from the dispatch to the answer (to the timeout, for a timeout). */
  durationMs: number
  /** Whether the task is done, will be retried, is dead, or goes back unchanged (the app closes). */
  next: TaskNextStep
}

/** `taskqueue:task:retried`: the task will run again; its retry is stored. */
export interface TaskRetriedEvent extends TaskEventBase {
  id: string
  /** Retries made, this one included. */
  retries: number
  /** Milliseconds until the retry is due. */
  delayMs: number
  /** Why, in words. */
  detail: string
  statusCode?: number
  reqId?: string
}

/**
 * `taskqueue:task:dead`: a task is buried in the dead letters (once per task). `id` is null when
 * it is not known: an unreadable message whose id could not be read, or a task that a Redis
 * recovery buried (the recovery counts those, it does not name them).
 */
export interface TaskDeadEvent extends TaskEventBase {
  id: string | null
  reason: DeadLetterReason
  detail?: string
  statusCode?: number
  /** The start of the answer's body (see `DeadLetter.body`). */
  body?: string
  reqId?: string
}

/**
 * `taskqueue:task:recovered`: a Redis recovery in this process gave a task of an expired consumer
 * back to its queue, where it runs alone (it may be what killed its consumer).
 */
export interface TaskRecoveredEvent extends TaskEventBase {
  id: string
}

/** `taskqueue:task:cancelled`: `cancel(id)` of a queue handle resolved to true. */
export interface TaskCancelledEvent extends TaskEventBase {
  id: string
}

declare module 'fastify' {
  interface FastifyInstance {
    taskqueue: TaskQueue
  }
  interface FastifyRequest {
    taskqueue: RequestTaskQueue
  }
  interface FastifyContextConfig {
    /** Answer 404 to every request that is not a task dispatched by this app's consumers. */
    taskOnly?: boolean
  }
}

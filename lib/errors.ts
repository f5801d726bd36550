import createError from '@fastify/error'

/**
 * A value as JSON for an error message. Never throws: JSON.stringify does for a circular object, a
 * BigInt or a toJSON that throws, which turned a bad argument into an uncoded TypeError. JSON
 * writes NaN, Infinity and an invalid Date as null, which told the caller nothing: those are named.
 */
export function shown (value: unknown): string {
  if (typeof value === 'number' && !Number.isFinite(value)) return String(value)
  if (value instanceof Date && Number.isNaN(value.getTime())) return 'an invalid Date'
  try {
    const json = JSON.stringify(value)
    if (json !== undefined) return json
  } catch {}
  return value === undefined ? 'undefined' : `a ${typeof value}`
}

// Every error the plugin raises carries a stable `code`: applications and tests match on the code,
// never on the wording of the message, which says what was wrong and what is allowed.

/** A plugin option is missing, of the wrong type, out of range or inconsistent with another. */
export const InvalidOptionError = createError<'FST_TASKQUEUE_INVALID_OPTION', [string]>(
  'FST_TASKQUEUE_INVALID_OPTION', 'Invalid taskqueue option: %s', 500)

/** The url given to `add()` is not a path of this app, or carries a query string together with `params`. */
export const InvalidUrlError = createError<'FST_TASKQUEUE_INVALID_URL', [string]>(
  'FST_TASKQUEUE_INVALID_URL', 'Invalid task url: %s', 500)

/** The method given to `add()` is not one a task may use. */
export const InvalidMethodError = createError<'FST_TASKQUEUE_INVALID_METHOD', [string]>(
  'FST_TASKQUEUE_INVALID_METHOD', 'Invalid task method: %s', 500)

/** An argument of `add()` other than url, method and queue is malformed. */
export const InvalidArgumentError = createError<'FST_TASKQUEUE_INVALID_ARGUMENT', [string]>(
  'FST_TASKQUEUE_INVALID_ARGUMENT', 'Invalid task argument: %s', 500)

/** A queue name that no registered queue has. */
export const UnknownQueueError = createError<'FST_TASKQUEUE_UNKNOWN_QUEUE', [string, string]>(
  'FST_TASKQUEUE_UNKNOWN_QUEUE', 'Unknown task queue "%s"; registered queues: %s', 500)

/**
 * `add()` to a local queue after the app began to close (its consumers stopped), or to any queue
 * once its connections closed: the task could not be run or kept.
 */
export const ClosedError = createError<'FST_TASKQUEUE_CLOSED', []>(
  'FST_TASKQUEUE_CLOSED', 'The task queue is closed: no task can be added while the app is closing', 503)

/** Pushing the tasks of a response to a shared queue failed before the response was sent. */
export const EnqueueFailedError = createError<'FST_TASKQUEUE_ENQUEUE_FAILED', [string]>(
  'FST_TASKQUEUE_ENQUEUE_FAILED', 'The tasks of this request could not be queued: %s', 503)

/**
 * Thrown by a task handler to ask for the task to be dispatched again later: the analogue of the
 * original's database conflict. It answers 409, the status the consumer retries.
 */
export const TaskConflictError = createError<'FST_TASKQUEUE_CONFLICT', []>(
  'FST_TASKQUEUE_CONFLICT', 'The task met a conflict and is to be dispatched again', 409)

/**
 * A Redis queue could not start: the server did not answer within `connectTimeout`, refused the
 * connection or its credentials, or has no database of the index asked for. The cause is attached.
 */
export const RedisUnavailableError = createError<'FST_TASKQUEUE_REDIS_UNAVAILABLE', [string, string, string, { cause: unknown }]>(
  'FST_TASKQUEUE_REDIS_UNAVAILABLE', 'Redis queue "%s" at %s is unavailable: %s', 503)

/**
 * A call on a queue (`length`, `reset`, `dead`, `requeue`, `purge`, or `add()` outside a request)
 * failed in its backend, such as a Redis that is down or does not answer. The cause is attached.
 */
export const QueueFailedError = createError<'FST_TASKQUEUE_QUEUE_FAILED', [string, string, string, { cause: unknown }]>(
  'FST_TASKQUEUE_QUEUE_FAILED', 'Queue "%s": %s failed: %s', 503)

/**
 * The task of a schedule's tick could not be added (a Redis that is down, a closed queue): logged,
 * never thrown at the app. The tick is not made up; the schedule adds its next tick as usual.
 */
export const ScheduleFailedError = createError<'FST_TASKQUEUE_SCHEDULE_FAILED', [string, string, string, string, { cause: unknown }]>(
  'FST_TASKQUEUE_SCHEDULE_FAILED', 'Schedule "%s": the task of its tick %s could not be added to queue "%s": %s', 500)

/** A queue call that the queue's backend (one of your own) does not implement. */
export const UnsupportedError = createError<'FST_TASKQUEUE_UNSUPPORTED', [string, string]>(
  'FST_TASKQUEUE_UNSUPPORTED', 'Queue "%s": its backend does not implement %s', 501)

/**
 * `metrics`: the registry already holds a metric of one of the plugin's names that this copy of
 * the plugin did not make (the app's own, or another copy's): the plugin would not share it.
 */
export const MetricsConflictError = createError<'FST_TASKQUEUE_METRICS_CONFLICT', [string]>(
  'FST_TASKQUEUE_METRICS_CONFLICT', 'The metrics registry already holds a metric named %s that fastify-taskqueue did not register: remove it, or pass another registry', 500)

// The dashboard's errors (lib/dashboard/): answers of its API, each with the status it is sent with.

/** `taskqueueDashboard` was registered where no `app.taskqueue` is: the taskqueue plugin must come first. */
export const NotRegisteredError = createError<'FST_TASKQUEUE_NOT_REGISTERED', []>(
  'FST_TASKQUEUE_NOT_REGISTERED', 'taskqueueDashboard needs fastify-taskqueue: register it before the dashboard, in the same app or a parent of its context', 500)

/** A dashboard API request whose params or query string do not match the route's schema. */
export const InvalidRequestError = createError<'FST_TASKQUEUE_INVALID_REQUEST', [string]>(
  'FST_TASKQUEUE_INVALID_REQUEST', 'Invalid dashboard request: %s', 400)

/** The dashboard API was asked for a task that the queue does not know (any more). */
export const UnknownTaskError = createError<'FST_TASKQUEUE_UNKNOWN_TASK', [string, string]>(
  'FST_TASKQUEUE_UNKNOWN_TASK', 'Queue "%s" has no task "%s"', 404)

/** A mutating dashboard request that is not `application/json`, the one type a cross-site form cannot send. */
export const UnsupportedMediaTypeError = createError<'FST_TASKQUEUE_UNSUPPORTED_MEDIA_TYPE', [string]>(
  'FST_TASKQUEUE_UNSUPPORTED_MEDIA_TYPE', 'A dashboard action must be sent as application/json, not %s', 415)

/** A mutating dashboard request that the browser says comes from another site. */
export const CrossSiteError = createError<'FST_TASKQUEUE_CROSS_SITE', []>(
  'FST_TASKQUEUE_CROSS_SITE', 'A dashboard action was refused: the browser says it comes from another site (Sec-Fetch-Site: cross-site)', 403)

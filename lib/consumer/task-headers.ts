// The `x-task-*` headers: what a consumer writes into each dispatched request, and what `add()`
// refuses from a caller. Their one home: the request side and the message checks import from here.
import type { TaskMessage } from '../../types'

/** Headers that describe a task: set by the consumer, refused in `add()`, never inherited. */
export const taskHeaderPrefix = 'x-task-'

/**
 * The headers a dispatched request carries about its task, in the order they are written; a task
 * of a group carries `x-task-group` too, after them.
 */
export const taskHeaderNames = ['x-task-id', 'x-task-queue', 'x-task-retries', 'x-task-eta', 'x-task-created-at'] as const

/** The headers a dispatched task of a schedule carries on top: the schedule's name and its tick (ISO 8601). */
export const scheduleHeaderNames = ['x-task-schedule', 'x-task-tick'] as const

/** The user agent of every dispatched request. */
export const dispatchUserAgent = 'fastify-taskqueue'

/**
 * Carries the single-use token that marks a request as a dispatch of this app's consumer. Outside
 * the `x-task-` prefix on purpose: `add()` strips and refuses that prefix, not this header.
 */
export const dispatchHeader = 'x-taskqueue-dispatch'

/**
 * The headers of a dispatched request: the task's own, then those that tell its route it is a
 * task of this app. The dispatch token goes last, after the headers that inject() would otherwise
 * add itself (host, content-length): working out the mark deletes it, and V8 deletes the last
 * property an object got without turning it into a slow dictionary, which every later read of
 * the request's headers would pay for. The names are written as literals (the same as
 * `taskHeaderNames`) so that V8 compiles them as plain property stores. `trace`: the headers that
 * carry the try's trace context (traceparent...).
 */
export function dispatchHeaders (message: TaskMessage, token: string, trace?: Record<string, string>): Record<string, string> {
  const headers: Record<string, string> = {}
  const own = message.headers
  for (const name in own) headers[name] = own[name]
  headers['x-task-id'] = message.id
  headers['x-task-queue'] = message.queue
  headers['x-task-retries'] = String(message.retries)
  headers['x-task-eta'] = new Date(message.eta).toISOString()
  headers['x-task-created-at'] = new Date(message.createdAt).toISOString()
  if (message.group !== undefined) headers['x-task-group'] = message.group
  const { schedule } = message
  if (schedule !== undefined) {
    headers['x-task-schedule'] = schedule.name
    headers['x-task-tick'] = new Date(schedule.tick).toISOString()
  }
  headers['user-agent'] = dispatchUserAgent
  // The try's own trace context wins over one the task inherited from the request that added it.
  if (trace !== undefined) for (const name in trace) headers[name] = trace[name]
  // inject()'s own defaults: a host from its base url, a length for a body that is not empty.
  headers.host ??= 'localhost:80'
  const { payload } = message
  if (payload !== undefined && payload !== '') headers['content-length'] = String(Buffer.byteLength(payload))
  headers[dispatchHeader] = token
  return headers
}

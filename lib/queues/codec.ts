// The stored formats, in one place: the task message and the dead letter as the Redis queue keeps
// them. A message is versioned JSON, with a binary payload in base64 so that it survives the round
// trip byte for byte. Decoding checks the shape of what it reads against a TypeBox schema: Redis
// may hold anything, put there by an older version, another program or a person.
//
// The text is read with the native JSON.parse, which makes a "__proto__" key an own property (it
// never changes a prototype), and the schema then refuses any key the format does not have, and
// any header value that is not a string: a "__proto__" or "constructor" key anywhere in a message
// makes it unreadable. secure-json-parse did the same with two regular expressions over the
// whole text, the costliest step of reading a message.
import { Type, type Static } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import type { DeadLetterCause, DeadLetterReason, TaskMessage } from '../../types'
import { taskMethods } from '../message'
import { InvalidArgumentError } from '../errors'

/**
 * A time a Date can hold: an eta such as 1e300 passed as a number, and then made the dispatch
 * throw (`new Date(eta).toISOString()`) on every try.
 */
const Time = Type.Number({ minimum: -8.64e15, maximum: 8.64e15 })

const StoredMessage = Type.Object({
  v: Type.Literal(1),
  id: Type.String({ minLength: 1, maxLength: 200 }),
  queue: Type.String({ minLength: 1 }),
  // A path of this app as add() accepts it: a single leading "/", no spaces or control characters.
  url: Type.String({ pattern: '^/(?![/\\\\])[^\\s\\u0000-\\u001f\\u007f]*$' }),
  method: Type.Union(taskMethods.map((method) => Type.Literal(method))),
  headers: Type.Record(Type.String(), Type.String()),
  payload: Type.Optional(Type.String()),
  /** Set when `payload` holds base64 of a binary body. */
  binary: Type.Optional(Type.Literal(true)),
  retries: Type.Integer({ minimum: 0 }),
  createdAt: Time,
  eta: Time,
  named: Type.Optional(Type.Literal(true)),
  group: Type.Optional(Type.String({ minLength: 1, maxLength: 200, pattern: '^[A-Za-z0-9_.:-]+$' })),
  /** The trace context of the code that added the task; absent from messages made without one. */
  trace: Type.Optional(Type.Record(Type.String(), Type.String())),
  /** The schedule and tick of a task that a schedule added (lib/schedules/). */
  schedule: Type.Optional(Type.Object({
    name: Type.String({ minLength: 1, maxLength: 100 }),
    tick: Time
  }, { additionalProperties: false }))
}, { additionalProperties: false })

const checkStored = TypeCompiler.Compile(StoredMessage)

const deadLetterReasons: DeadLetterReason[] = ['retries exhausted', 'final status', 'timeout', 'recovered too often', 'unreadable']

/**
 * A dead letter as the Redis queue stores it: the task as the exact string that was stored. The
 * recover script writes the same shape in Lua, for the tasks it buries as recovered too often.
 */
const StoredDeadLetterSchema = Type.Object({
  reason: Type.Union(deadLetterReasons.map((reason) => Type.Literal(reason))),
  detail: Type.Optional(Type.String()),
  statusCode: Type.Optional(Type.Integer({ minimum: 100, maximum: 999 })),
  /** The start of the answer that killed the task (1024 bytes of UTF-8 at most: 1024 characters). */
  body: Type.Optional(Type.String({ maxLength: 1024 })),
  at: Time,
  task: Type.String()
}, { additionalProperties: false })

export type StoredDeadLetter = Static<typeof StoredDeadLetterSchema>

const checkDeadLetter = TypeCompiler.Compile(StoredDeadLetterSchema)

/** A dead letter to store: the cause, when it was buried (ms), and the task as it was stored. */
export function encodeDeadLetter (cause: DeadLetterCause, at: number, task: string): string {
  return JSON.stringify({ ...cause, at, task })
}

/** Reads a stored dead letter, checked like a message: Redis may hold anything under that key too. */
export function decodeDeadLetter (entry: string): { letter: StoredDeadLetter, problem?: undefined } | { letter?: undefined, problem: string } {
  let parsed: unknown
  try {
    parsed = JSON.parse(entry)
  } catch (error) {
    return { problem: `not a dead letter: ${(error as Error).message}` }
  }
  if (!checkDeadLetter.Check(parsed)) {
    const error = checkDeadLetter.Errors(parsed).First()
    return { problem: `not a dead letter: ${error?.path ?? ''} ${error?.message ?? ''}`.trim() }
  }
  return { letter: parsed }
}

/** Largest message a consumer accepts from Redis; larger ones are buried unread. */
export const maxMessageBytes = 16 * 1024 * 1024

/** Room kept under the limit for what a retry changes in a message: its retry count and eta. */
const retryRoom = 64

/**
 * Throws FST_TASKQUEUE_INVALID_ARGUMENT for a task whose stored message no consumer would read (it
 * would be buried as unreadable). A cheap upper bound of the encoded length first (JSON makes
 * at most six characters of one, base64 four of three bytes); the message is encoded only when
 * that bound is over the limit.
 */
export function checkEncodable (message: TaskMessage): void {
  const limit = maxMessageBytes - retryRoom
  const { payload, headers } = message
  let bound = 256 + (message.id.length + message.queue.length + message.url.length + (message.group?.length ?? 0)) * 6
  for (const name in headers) bound += (name.length + headers[name].length) * 6 + 6
  if (payload !== undefined) bound += Buffer.isBuffer(payload) ? Math.ceil(payload.length / 3) * 4 : payload.length * 6
  if (bound <= limit) return
  const length = encodeMessage(message).length
  if (length > limit) {
    throw new InvalidArgumentError(`the task would be stored as ${length} characters, over the ${limit} a consumer reads (url, headers and payload too large)`)
  }
}

export function encodeMessage (message: TaskMessage): string {
  const { payload } = message
  if (Buffer.isBuffer(payload)) {
    return JSON.stringify({ ...message, payload: payload.toString('base64'), binary: true })
  }
  return JSON.stringify(message)
}

/** An unreadable message yields its problem, and the task id that could still be read from it, if any. */
export type Decoded = { message: TaskMessage, problem?: undefined, id?: undefined } | { message?: undefined, problem: string, id?: string }

const taskId = /^[A-Za-z0-9_.:-]{1,200}$/
/** The id as encodeMessage writes it, at the head of the text. */
const idHead = /^\{"v":1,"id":"([A-Za-z0-9_.:-]{1,200})"/

/** The task id at the head of a message that cannot be parsed (too large, cut short). */
export function idAtHead (raw: string): string | undefined {
  return idHead.exec(raw.slice(0, 256))?.[1]
}

/** Reads a stored message; a malformed, foreign or oversized one yields the problem instead. */
export function decodeMessage (raw: string): Decoded {
  if (raw.length > maxMessageBytes) return { problem: `message of ${raw.length} bytes is over the limit of ${maxMessageBytes}`, id: idAtHead(raw) }
  let parsed: unknown
  try {
    parsed = JSON.parse(raw)
  } catch (error) {
    return { problem: `not a task message: ${(error as Error).message}`, id: idAtHead(raw) }
  }
  if (!checkStored.Check(parsed)) {
    const error = checkStored.Errors(parsed).First()
    const id = (parsed as { id?: unknown } | null)?.id
    return { problem: `not a task message: ${error?.path ?? ''} ${error?.message ?? ''}`.trim(), id: typeof id === 'string' && taskId.test(id) ? id : undefined }
  }
  if (parsed.binary === true) {
    const { binary, ...message } = parsed
    return { message: { ...message, payload: Buffer.from(message.payload ?? '', 'base64') } as TaskMessage }
  }
  return { message: parsed as TaskMessage }
}

/** Reads a stored message, which must also be a task of `queue`: one of another queue is unreadable here. */
export function decodeTaskOf (queue: string, raw: string): Decoded {
  const decoded = decodeMessage(raw)
  if (decoded.message !== undefined && decoded.message.queue !== queue) {
    return { problem: `a task of queue "${decoded.message.queue}", not of "${queue}"`, id: decoded.message.id }
  }
  return decoded
}

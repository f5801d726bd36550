// Task messages as stored in Redis: versioned JSON, with a binary payload in base64 so that it
// survives the round trip byte for byte. Decoding checks the shape of what it reads: Redis may
// hold anything, put there by an older version, another program or a person.
//
// The text is read with the native JSON.parse, which makes a "__proto__" key an own property (it
// never changes a prototype), and the schema then refuses any key the format does not have, and
// any header value that is not a string: a "__proto__" or "constructor" key anywhere in a message
// makes it unreadable. secure-json-parse did the same with two regular expressions over the
// whole text, the costliest step of reading a message.
import { Type } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import type { TaskMessage } from '../../types'
import { taskMethods } from '../message'

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
  named: Type.Optional(Type.Literal(true))
}, { additionalProperties: false })

const checkStored = TypeCompiler.Compile(StoredMessage)

/** Largest message a consumer accepts from Redis; larger ones are set aside unread. */
export const maxMessageBytes = 16 * 1024 * 1024

export function encodeMessage (message: TaskMessage): string {
  const { payload } = message
  if (Buffer.isBuffer(payload)) {
    return JSON.stringify({ ...message, payload: payload.toString('base64'), binary: true })
  }
  return JSON.stringify(message)
}

export type Decoded = { message: TaskMessage, problem?: undefined } | { message?: undefined, problem: string }

/** Reads a stored message; a malformed, foreign or oversized one yields the problem instead. */
export function decodeMessage (raw: string): Decoded {
  if (raw.length > maxMessageBytes) return { problem: `message of ${raw.length} bytes is over the limit of ${maxMessageBytes}` }
  let parsed: unknown
  try {
    parsed = JSON.parse(raw)
  } catch (error) {
    return { problem: `not a task message: ${(error as Error).message}` }
  }
  if (!checkStored.Check(parsed)) {
    const error = checkStored.Errors(parsed).First()
    return { problem: `not a task message: ${error?.path ?? ''} ${error?.message ?? ''}`.trim() }
  }
  if (parsed.binary === true) {
    const { binary, ...message } = parsed
    return { message: { ...message, payload: Buffer.from(message.payload ?? '', 'base64') } as TaskMessage }
  }
  return { message: parsed as TaskMessage }
}

// Turning an `add(url, options)` call into a task message: validation of every argument, the
// headers copied from the request that queues the task, and its payload.
import { randomUUID } from 'node:crypto'
import { validateHeaderName, validateHeaderValue } from 'node:http'
import { Type, type Static } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import type { FastifyRequest } from 'fastify'
import type { TaskMessage, TaskMethod } from '../types'
import type { HeaderPolicy } from './options'
import { InvalidArgumentError, InvalidMethodError, InvalidUrlError, shown } from './errors'
import { taskHeaderPrefix } from './consumer/task-headers'

export const taskMethods: readonly TaskMethod[] = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE']

/** The longest a task may be put off: a year. */
const maxDelay = 365 * 24 * 60 * 60 * 1000

/** The characters and length of a task id, and of a group name. */
const TaskIdSchema = Type.String({ minLength: 1, maxLength: 200, pattern: '^[A-Za-z0-9_.:-]+$' })

const ParamValue = Type.Union([Type.String(), Type.Number(), Type.Boolean()])

export const AddOptionsSchema = Type.Object({
  /** HTTP method of the task request. */
  method: Type.Optional(Type.Union(taskMethods.map((method) => Type.Literal(method)), { default: 'GET' })),
  /** Url-encoded onto the url as its query string; arrays become repeated keys. */
  params: Type.Optional(Type.Record(Type.String(), Type.Union([ParamValue, Type.Array(ParamValue)]))),
  /** Headers of the task request; they win over those copied from the current request. */
  headers: Type.Optional(Type.Record(Type.String(), Type.String())),
  /**
   * Body of the task request. Left out: the current request's body. `null`: none. An object or
   * array is sent as JSON, a string or a Buffer as it is.
   */
  payload: Type.Optional(Type.Unsafe<Record<string, unknown> | unknown[] | string | Buffer | Uint8Array | null>(Type.Unknown())),
  /** Queue name; the default is the alphabetically first registered queue. */
  queue: Type.Optional(Type.String()),
  /**
   * A task id of the caller's choosing. While a task with this id is waiting, delayed or in flight,
   * adding it again is a no-op that returns the same id.
   */
  id: Type.Optional(TaskIdSchema),
  /**
   * The group of the task: the queue's `groupConcurrency` bounds how many tasks of one group are in
   * flight at once, and the groups with waiting tasks take turns.
   */
  group: Type.Optional(TaskIdSchema),
  /** Milliseconds to wait before the task may run. */
  delay: Type.Optional(Type.Integer({ minimum: 0, maximum: maxDelay })),
  /** The task does not run before this moment. */
  notBefore: Type.Optional(Type.Date())
}, { additionalProperties: false })

export type AddOptions = Static<typeof AddOptionsSchema>

const checkAddOptions = TypeCompiler.Compile(AddOptionsSchema)

/**
 * Connection-level headers, and those the dispatch sets itself, never travel with a task; nor do
 * the `x-task-*` headers (`taskHeaderPrefix`): a task that queues a task starts a fresh one.
 */
const neverCopied = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te',
  'trailer', 'transfer-encoding', 'upgrade', 'expect', 'content-length', 'content-encoding',
  'user-agent'
])

function checkAddOptionsShape (options: unknown): void {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new InvalidArgumentError(`options must be an object, got ${shown(options)}`)
  }
  const { method } = options as { method?: unknown }
  if (method !== undefined && !taskMethods.includes(method as TaskMethod)) {
    throw new InvalidMethodError(`expected one of ${taskMethods.join(', ')}, got ${shown(method)}`)
  }
  if (checkAddOptions.Check(options)) return
  const error = checkAddOptions.Errors(options).First()
  const where = error === undefined || error.path === '' ? 'options' : `options${error.path.replaceAll('/', '.')}`
  throw new InvalidArgumentError(`${where}: ${error?.message ?? 'invalid'}, got ${shown(error?.value)}; allowed options are ${Object.keys(AddOptionsSchema.properties).join(', ')}`)
}

function checkUrl (url: unknown, hasParams: boolean): string {
  if (typeof url !== 'string' || url.length === 0) {
    throw new InvalidUrlError(`expected a path of this app such as "/tasks/run", got ${shown(url)}`)
  }
  // A path of this app: no scheme, no host, no protocol-relative "//host", nothing a request line
  // could not carry.
  if (url[0] !== '/' || url[1] === '/' || url[1] === '\\' || /[\s\u0000-\u001f\u007f]/.test(url)) { // eslint-disable-line no-control-regex
    throw new InvalidUrlError(`"${url}" is not a path of this app: it must begin with a single "/" and hold no spaces or control characters`)
  }
  if (hasParams && url.includes('?')) {
    throw new InvalidUrlError(`"${url}" already has a query string: pass the query either in the url or as params, not both`)
  }
  return url
}

function encodeParams (params: NonNullable<AddOptions['params']>): string {
  const search = new URLSearchParams()
  for (const [key, value] of Object.entries(params)) {
    if (Array.isArray(value)) for (const item of value) search.append(key, String(item))
    else search.append(key, String(value))
  }
  const query = search.toString()
  return query === '' ? '' : `?${query}`
}

function checkHeaders (headers: Record<string, string>): void {
  for (const [name, value] of Object.entries(headers)) {
    try {
      validateHeaderName(name)
      validateHeaderValue(name, value)
    } catch (error) {
      throw new InvalidArgumentError(`header ${JSON.stringify(name)}: ${(error as Error).message}`)
    }
    if (name.toLowerCase().startsWith(taskHeaderPrefix)) {
      throw new InvalidArgumentError(`header "${name}": x-task-* headers are set by the queue when it dispatches the task`)
    }
  }
}

/** Which request headers a task inherits: all but the excluded, or only the allowed. */
interface CopyPolicy {
  allowed: Set<string> | undefined
  excluded: Set<string>
  /** The last Connection header value seen, and the header names it listed. */
  lastConnection?: string
  lastListed?: Set<string>
}

function copyPolicy (policy: HeaderPolicy): CopyPolicy {
  const lower = (names: string[]) => new Set(names.map((name) => name.toLowerCase()))
  return {
    allowed: policy.allow === undefined ? undefined : lower(policy.allow),
    excluded: lower([...neverCopied, ...policy.exclude ?? []])
  }
}

/**
 * Headers that the request's Connection header names as hop-by-hop, beyond those never copied
 * anyway; undefined when there are none (as for the usual `keep-alive`). Clients send the same
 * value again and again: the last one is remembered.
 */
function connectionListed (connection: string | string[] | undefined, policy: CopyPolicy): Set<string> | undefined {
  if (typeof connection !== 'string') return undefined
  if (connection === policy.lastConnection) return policy.lastListed
  let listed: Set<string> | undefined
  for (const token of connection.toLowerCase().split(',')) {
    const name = token.trim()
    if (name !== '' && !policy.excluded.has(name)) (listed ??= new Set()).add(name)
  }
  policy.lastConnection = connection
  policy.lastListed = listed
  return listed
}

/** Headers of the current request that a task inherits, with its content type or not. */
function inheritedHeaders (request: FastifyRequest, withContentType: boolean, policy: CopyPolicy): Record<string, string> {
  const headers: Record<string, string> = {}
  const source = request.headers
  const hopByHop = connectionListed(source.connection, policy)
  // Object.keys rather than for-in: a request with twenty-odd headers keeps them in a dictionary,
  // whose for-in enumeration costs more.
  const names = Object.keys(source)
  for (let index = 0; index < names.length; index++) {
    const name = names[index]
    const value = source[name]
    if (value === undefined || policy.excluded.has(name) || name.startsWith(taskHeaderPrefix)) continue
    if (policy.allowed !== undefined && !policy.allowed.has(name)) continue
    if (name === 'content-type' && !withContentType) continue
    if (hopByHop !== undefined && hopByHop.has(name)) continue
    headers[name] = typeof value === 'string' ? value : value.join(', ')
  }
  return headers
}

interface Body { payload: string | Buffer | undefined, contentType: string | undefined }

/**
 * The body of the request that queues a task, as the task sends it: text and bytes as they came,
 * under the request's own content type (`ownType`); anything a parser made, as JSON. Encoding it
 * like a `payload` option made add() throw for a JSON body such as `42` or `true`, and sent a
 * JSON string body (`"text"`) unquoted under application/json.
 */
function inheritedBody (request: FastifyRequest): Body & { ownType: boolean } {
  const body = request.body
  const jsonText = typeof body === 'string' && /^application\/json\s*(;|$)/i.test(request.headers['content-type'] ?? '')
  // Any Uint8Array, not only a Buffer: a parser that gives plain bytes would otherwise have them
  // sent as a JSON object of indices.
  if (body instanceof Uint8Array || (typeof body === 'string' && !jsonText)) return { ...encodeBody(body), ownType: true }
  if (body === null) return { ...encodeBody(body), ownType: false }
  const payload = asJson(body, 'the body of the request that queues the task', 'pass the task\'s body as options.payload (null for none)')
  return { payload, contentType: 'application/json', ownType: false }
}

/**
 * `value` as JSON, or a coded error saying what to do. JSON.stringify throws a plain TypeError for
 * a circular object (as @fastify/multipart makes a body with attachFieldsToBody) or a BigInt,
 * passes on what a toJSON throws, and gives undefined for a function or a symbol.
 */
function asJson (value: unknown, what: string, remedy: string): string {
  let json: string | undefined
  try {
    json = JSON.stringify(value)
  } catch (error) {
    // V8's message for a circular object runs over several lines: its first says it all.
    const reason = String((error as Error)?.message).split('\n')[0]
    throw new InvalidArgumentError(`payload: ${what} cannot be sent as JSON (${reason}): ${remedy}`)
  }
  if (json === undefined) throw new InvalidArgumentError(`payload: ${what} has no JSON form: ${remedy}`)
  return json
}

function encodeBody (body: unknown): Body {
  if (body === undefined || body === null) return { payload: undefined, contentType: undefined }
  if (typeof body === 'string') return { payload: body, contentType: 'text/plain; charset=utf-8' }
  if (Buffer.isBuffer(body)) return { payload: body, contentType: 'application/octet-stream' }
  if (body instanceof Uint8Array) return { payload: Buffer.from(body), contentType: 'application/octet-stream' }
  if (typeof body === 'object') {
    return { payload: asJson(body, 'the given object', 'give a string or a Buffer instead'), contentType: 'application/json' }
  }
  throw new InvalidArgumentError(`payload: expected an object, an array, a string, a Buffer or null, got a ${typeof body}`)
}

/**
 * A random UUID as a flat string. randomUUID() builds its result by concatenation, and V8 keeps
 * such a string as a tree of pieces: about 480 bytes of heap for 36 characters, held for as long
 * as the task waits. toLowerCase() (a UUID is lower-case already) reads it whole, which makes V8
 * flatten it: about 56 bytes. Its result is used, so the optimiser cannot drop it, as it dropped
 * an unused Number(id) that did the same until the code got hot.
 */
function newTaskId (): string {
  return randomUUID().toLowerCase()
}

export type CreateTaskMessage = (url: string, options: AddOptions | undefined, request: FastifyRequest | undefined) => TaskMessage

/**
 * Makes the function that builds the message of one task. `request` is the request that queues
 * it, when there is one: its headers (as `headerPolicy` allows) and body are inherited.
 * `resolveQueue` maps the queue option to a registered queue. Throws a coded error for any bad
 * argument.
 */
export function taskMessageFactory (headerPolicy: HeaderPolicy, resolveQueue: (queue: string | undefined) => string): CreateTaskMessage {
  const policy = copyPolicy(headerPolicy)
  return function createTaskMessage (url, options, request) {
    if (options !== undefined) checkAddOptionsShape(options)
    const queue = resolveQueue(options?.queue)
    const method = options?.method ?? 'GET'
    const params = options?.params
    let path = checkUrl(url, params !== undefined)
    if (params !== undefined) path += encodeParams(params)
    if (options?.headers !== undefined) checkHeaders(options.headers)
    if (options?.delay !== undefined && options.notBefore !== undefined) {
      throw new InvalidArgumentError('options.delay and options.notBefore: give one or the other')
    }
    // The same bound as delay: past it a local queue's timer would overflow, and a far date is
    // more likely a mistake (a timestamp in seconds, a wrong year) than a plan.
    if (options?.notBefore !== undefined && options.notBefore.getTime() - Date.now() > maxDelay) {
      throw new InvalidArgumentError(`options.notBefore: at most a year from now, as for delay, got ${options.notBefore.toISOString()}`)
    }

    // By default a task carries the body of the request that queues it, except a GET, which has none.
    const inheritsBody = options?.payload === undefined && request !== undefined && method !== 'GET' && request.body !== undefined
    const inherited = inheritsBody ? inheritedBody(request) : undefined
    const body = inherited ?? encodeBody(options?.payload)
    // A string or Buffer body goes as it came, so its content type still describes it; a parsed
    // body is sent as JSON, which encodeBody labels.
    const keepsContentType = inherited?.ownType === true
    const headers = request === undefined ? {} : inheritedHeaders(request, keepsContentType, policy)
    if (body.payload !== undefined && headers['content-type'] === undefined) headers['content-type'] = body.contentType as string
    if (options?.headers !== undefined) {
      for (const name in options.headers) headers[name.toLowerCase()] = options.headers[name]
    }

    const now = Date.now()
    const eta = options?.notBefore?.getTime() ?? now + (options?.delay ?? 0)
    const message: TaskMessage = {
      v: 1, id: options?.id ?? newTaskId(), queue, url: path, method, headers, payload: body.payload, retries: 0, createdAt: now, eta
    }
    if (options?.id !== undefined) message.named = true
    if (options?.group !== undefined) message.group = options.group
    return message
  }
}

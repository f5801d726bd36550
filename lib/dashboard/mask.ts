// What the dashboard shows of a task: its credentials masked. A task copies the headers of the
// request that added it (cookies and tokens included, so that it runs as that user), and an admin
// page must not hand them to whoever may read it. Payloads are left out for the same reason.
import type { DeadLetter, TaskInfo, TaskMessage } from '../../types'

/** What a masked value reads as. */
export const MASKED = '[masked]'

/**
 * A header or query parameter whose name holds one of these words carries a credential: cookie,
 * set-cookie, authorization, proxy-authorization, x-api-key, x-auth-token, x-csrf-token, a
 * session id, a password, a signature... Masking a harmless one (x-idempotency-key) costs less
 * than showing a secret one whose name we did not foresee.
 */
const credentialWords = /auth|cookie|token|secret|passw|pwd|key|credential|session|signature|csrf|xsrf/i

export function isCredential (name: string): boolean {
  return credentialWords.test(name)
}

export function maskHeaders (headers: Record<string, string>): Record<string, string> {
  const masked: Record<string, string> = {}
  for (const [name, value] of Object.entries(headers)) masked[name] = isCredential(name) ? MASKED : value
  return masked
}

/** The url with the values of its credential query parameters masked (`?token=...`). */
export function maskUrl (url: string): string {
  const at = url.indexOf('?')
  if (at === -1) return url
  const pairs = url.slice(at + 1).split('&').map((pair) => {
    const equals = pair.indexOf('=')
    const name = equals === -1 ? pair : pair.slice(0, equals)
    return equals !== -1 && isCredential(decodedName(name)) ? `${name}=${MASKED}` : pair
  })
  return `${url.slice(0, at)}?${pairs.join('&')}`
}

/** A query parameter name as the app reads it (`x%2Dapi%2Dkey`, `api+key`); undecodable, as it is. */
function decodedName (name: string): string {
  try {
    return decodeURIComponent(name.replace(/\+/g, ' '))
  } catch {
    return name
  }
}

/** A task as `get()` and `waiting()` tell it, masked. */
export function taskView (info: TaskInfo): TaskInfo {
  return { ...info, url: maskUrl(info.url), headers: maskHeaders(info.headers) }
}

/** A stored task as a dead letter keeps it: masked, with the size of its payload instead of it. */
export type DeadTaskView = Omit<TaskMessage, 'payload'> & { payloadBytes?: number }

/** A dead letter as the dashboard tells it. */
export type DeadLetterView = Omit<DeadLetter, 'task' | 'raw'> & { task: DeadTaskView | null, rawBytes?: number }

/**
 * A dead letter, masked. The text of an unreadable one is left out as well: it could not be read
 * as a task, so neither can its credentials be found in it; only its size is told.
 */
export function deadLetterView (letter: DeadLetter): DeadLetterView {
  const { task, raw, ...rest } = letter
  const view: DeadLetterView = { ...rest, task: task === null ? null : deadTaskView(task) }
  if (raw !== undefined) view.rawBytes = Buffer.byteLength(raw)
  return view
}

function deadTaskView (task: TaskMessage): DeadTaskView {
  const { payload, ...rest } = task
  const view: DeadTaskView = { ...rest, url: maskUrl(task.url), headers: maskHeaders(task.headers) }
  if (payload !== undefined) view.payloadBytes = Buffer.byteLength(payload)
  return view
}

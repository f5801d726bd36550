// What the answer to a dispatched task means for the task: the outcome table of the README.

export type Outcome =
  /** 2xx: finished. */
  | 'done'
  /** 3xx: finished, but the redirect is not followed, which deserves a warning. */
  | 'redirected'
  /** Worth another try: 409, 429, 5xx but 501, a timeout, or a dispatch that failed. */
  | 'retry'
  /** Any other status: no try will do better, so the task goes to the dead letters at once. */
  | 'final'

export function outcomeOf (statusCode: number): Outcome {
  if (statusCode >= 200 && statusCode < 300) return 'done'
  if (statusCode >= 300 && statusCode < 400) return 'redirected'
  if (statusCode === 409 || statusCode === 429 || (statusCode >= 500 && statusCode !== 501)) return 'retry'
  return 'final'
}

/** Longest wait a Retry-After header may ask for: past it, the consumer's own backoff applies. */
const retryAfterCeiling = 24 * 60 * 60 * 1000

/**
 * The delay a 429 or 503 answer asks for in its Retry-After header (seconds or an HTTP date),
 * in ms, or undefined when there is none to honour.
 */
export function retryAfterDelay (statusCode: number, header: string | string[] | undefined, now: number): number | undefined {
  if ((statusCode !== 429 && statusCode !== 503) || typeof header !== 'string') return undefined
  const delay = /^\s*\d+\s*$/.test(header) ? Number(header) * 1000 : Date.parse(header) - now
  if (!Number.isFinite(delay)) return undefined
  return Math.min(Math.max(0, delay), retryAfterCeiling)
}

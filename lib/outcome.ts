// What the status of a dispatched task means for the task.

export type Outcome =
  /** 2xx: finished. */
  | 'done'
  /** 3xx: finished, but the redirect is not followed, which deserves a warning. */
  | 'redirected'
  /** The task asked to be dispatched again (409 Conflict, as thrown by TaskConflictError). */
  | 'retry'
  /** Any other status: finished with an error, not dispatched again. */
  | 'failed'

export function outcomeOf (statusCode: number): Outcome {
  if (statusCode >= 200 && statusCode < 300) return 'done'
  if (statusCode >= 300 && statusCode < 400) return 'redirected'
  if (statusCode === 409) return 'retry'
  return 'failed'
}
